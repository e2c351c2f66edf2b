"""Receiving upload streams (models and dataset shards): metadata first, then chunks, checked as they arrive.

Both RPCs share one spooling routine: chunks of at most 1 MiB, a running size
cap, the declared size and sha256 (when declared) verified before anything is
stored. The bytes are hashed and written on a thread of their own while the
next chunks arrive (hashing and file writes release the GIL), once: the store
takes the spooled file and its digest as they are. What differs between the
RPCs is only the metadata message, the size-cap error and the content check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

from prunekit.v1 import model_pb2, optimizer_service_pb2

from ..archive_scan import prescan_torchscript_archive
from ..errors import Code, FieldViolation, ServiceError, is_disk_full, storage_full
from ..jobs.durable.keys import is_sha256
from ..model_caps import ModelCaps
from ..observability.metrics import UPLOADED_BYTES

MAX_CHUNK_BYTES = 1 << 20
_FORMATS = {model_pb2.MODEL_FORMAT_ONNX, model_pb2.MODEL_FORMAT_TORCHSCRIPT}


_Request: TypeAlias = optimizer_service_pb2.UploadModelRequest | optimizer_service_pb2.UploadDatasetRequest
"""Both upload streams: a ``payload`` oneof of ``metadata`` (first) and ``chunk``."""


def _bad(message: str, reason: str = "INVALID_REQUEST", **violations: str) -> ServiceError:
    return ServiceError(
        Code.INVALID_ARGUMENT, reason, message, [FieldViolation(k, v) for k, v in violations.items()]
    )


def _too_large(what: str, reason: str, setting: str, limit: int) -> Callable[[], ServiceError]:
    def error() -> ServiceError:
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            reason,
            f"the {what} is larger than this server's {limit} byte limit",
            metadata={setting: str(limit)},
        )

    return error


def _model_too_large(limit: int) -> Callable[[], ServiceError]:
    return _too_large("model", "MODEL_TOO_LARGE", "max_upload_bytes", limit)


def _dataset_too_large(limit: int) -> Callable[[], ServiceError]:
    return _too_large("dataset shard", "DATASET_TOO_LARGE", "max_dataset_upload_bytes", limit)


def _common_violations(filename: str, size_bytes: int, sha256: str) -> tuple[str, dict[str, str]]:
    """The base name of ``filename`` and the violations of the fields both metadata messages share."""
    violations: dict[str, str] = {}
    name = os.path.basename(filename.replace("\\", "/"))
    if not name or len(name) > 255 or not name.isprintable():
        violations["metadata.filename"] = "a file name of 1 to 255 printable characters"
    if size_bytes <= 0:
        violations["metadata.size_bytes"] = "the total size, > 0"
    if sha256 and not is_sha256(sha256.lower()):
        violations["metadata.sha256"] = "64 hex digits, or empty for the server to compute it"
    return name, violations


def check_metadata(
    meta: optimizer_service_pb2.UploadMetadata, max_bytes: int, caps: ModelCaps | None = None
) -> model_pb2.ModelRef:
    """The ModelRef an upload declares, once every metadata field is valid.

    With ``caps``, a file larger than ``caps.max_tensor_bytes`` is MODEL_TOO_LARGE before any byte of it
    is received: an ONNX file holds its tensors inline (external data is refused) and is parsed whole, and
    a TorchScript archive unpacks to at least about its size, so no such file can pass the worker's caps.
    """
    filename, violations = _common_violations(meta.filename, meta.size_bytes, meta.sha256)
    if meta.format not in _FORMATS:
        violations["metadata.format"] = "MODEL_FORMAT_ONNX or MODEL_FORMAT_TORCHSCRIPT"
    if violations:
        raise _bad("invalid upload metadata", **violations)
    if meta.size_bytes > max_bytes:
        raise _model_too_large(max_bytes)()
    if caps is not None and meta.size_bytes > caps.max_tensor_bytes:
        raise caps.too_large("max_tensor_bytes", f"{filename} is {meta.size_bytes} bytes")
    return model_pb2.ModelRef(
        sha256=meta.sha256.lower(), size_bytes=meta.size_bytes, format=meta.format, filename=filename
    )


def check_dataset_metadata(
    meta: optimizer_service_pb2.DatasetMetadata, max_bytes: int
) -> model_pb2.DatasetRef:
    """The DatasetRef a dataset upload declares (no samples or arrays yet), once its metadata is valid."""
    filename, violations = _common_violations(meta.filename, meta.size_bytes, meta.sha256)
    if violations:
        raise _bad("invalid upload metadata", **violations)
    if meta.size_bytes > max_bytes:
        raise _dataset_too_large(max_bytes)()
    return model_pb2.DatasetRef(sha256=meta.sha256.lower(), size_bytes=meta.size_bytes, filename=filename)


class _Writer:
    """Hashes and writes chunks on a thread of its own, in order, a few chunks behind the receiver."""

    def __init__(self, fd: int) -> None:
        self.digest = hashlib.sha256()
        self._out = os.fdopen(fd, "wb")
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="upload-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk: bytes | None = b""
        try:
            while (chunk := self._chunks.get()) is not None:
                self.digest.update(chunk)
                self._out.write(chunk)
            self._out.close()  # the last flush can fail too (ENOSPC, EDQUOT, EIO): it counts
        except BaseException as exc:  # surfaced by close(); keep draining so put() never blocks
            self._error = exc
            while chunk is not None:
                chunk = self._chunks.get()
        finally:
            with contextlib.suppress(OSError):
                self._out.close()

    def put(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def close(self) -> None:
        """Wait for every chunk to be written; a disk that failed them raises :func:`spool_error`."""
        self._chunks.put(None)
        self._thread.join()
        if isinstance(self._error, OSError):
            raise spool_error(self._error) from self._error
        if self._error is not None:
            raise self._error


def spool_error(exc: OSError) -> ServiceError:
    """The upload could not be received on this server's disk: a full disk or quota is
    RESOURCE_EXHAUSTED (STORAGE_FULL); any other failure (read-only, I/O error) STORAGE_UNAVAILABLE."""
    detail = exc.strerror or str(exc)
    if is_disk_full(exc):
        return storage_full("store", f"{detail} (receiving the upload)")
    return ServiceError(
        Code.UNAVAILABLE, "STORAGE_UNAVAILABLE", f"the upload could not be received: {detail}"
    )


@contextmanager
def _spool(
    chunks: Iterator[_Request],
    kind: str,
    declared_size: int,
    declared_sha256: str,
    spool_dir: Path | None,
    max_bytes: int,
    too_large: Callable[[], ServiceError],
) -> Iterator[tuple[Path, bytes, str]]:
    """Write the chunk messages that follow the metadata to a temporary file, verified.

    Yields the file, its first 8 bytes and its sha256 (checked against ``declared_sha256`` unless that is
    empty); the file is removed afterwards unless it was moved away, also when the client goes away.
    """
    try:
        fd, name = tempfile.mkstemp(prefix="prunekit-upload-", dir=spool_dir)
    except OSError as exc:
        raise spool_error(exc) from exc
    path = Path(name)
    writer = _Writer(fd)
    try:
        try:
            received, head = _receive(chunks, kind, declared_size, max_bytes, too_large, writer)
        finally:
            writer.close()
        if received != declared_size:
            raise _bad(f"{received} bytes arrived, {declared_size} were declared", "SIZE_MISMATCH")
        actual = writer.digest.hexdigest()
        if declared_sha256 and actual != declared_sha256:
            raise _bad(
                f"the bytes' sha256 is {actual}, the metadata declared {declared_sha256}", "CHECKSUM_MISMATCH"
            )
        yield path, head, actual
    finally:
        path.unlink(missing_ok=True)


def _receive(
    chunks: Iterator[_Request],
    kind: str,
    declared_size: int,
    max_bytes: int,
    too_large: Callable[[], ServiceError],
    writer: _Writer,
) -> tuple[int, bytes]:
    """Hand every chunk to ``writer``, checking sizes as they arrive; the byte count and the first 8 bytes."""
    received = 0
    head = b""
    for message in chunks:
        if message.WhichOneof("payload") != "chunk":
            raise _bad(f"only the first {kind} carries metadata", chunk="expected a chunk")
        chunk = message.chunk
        if len(chunk) > MAX_CHUNK_BYTES:
            raise _bad(f"chunks must be at most {MAX_CHUNK_BYTES} bytes", chunk=f"{len(chunk)} bytes")
        received += len(chunk)
        UPLOADED_BYTES.labels("dataset" if "Dataset" in kind else "model").inc(len(chunk))
        if received > max_bytes:
            raise too_large()
        if received > declared_size:
            raise _bad(f"more than the declared {declared_size} bytes arrived", "SIZE_MISMATCH")
        if len(head) < 8:
            head += chunk[: 8 - len(head)]
        writer.put(chunk)
    return received, head


def _first(requests: Iterator[_Request], kind: str) -> _Request:
    first = next(requests, None)
    if first is None or first.WhichOneof("payload") != "metadata":
        raise _bad(f"the first {kind} must carry metadata", metadata="required in the first message")
    return first


@contextmanager
def receive_upload(
    requests: Iterator[optimizer_service_pb2.UploadModelRequest],
    spool_dir: Path | None,
    max_bytes: int,
    caps: ModelCaps | None = None,
) -> Iterator[tuple[Path, model_pb2.ModelRef]]:
    """Spool an UploadModel stream to a temporary file, verified against its metadata.

    Yields the file and the declared ref; the file is removed afterwards,
    also when the client goes away mid-stream. With ``caps``, the size is checked against them
    (:func:`check_metadata`) and a TorchScript archive is pre-scanned under them (its directory only:
    a deflate bomb is MODEL_TOO_LARGE, a malformed archive INVALID_MODEL) before it is yielded.
    """
    kind = "UploadModelRequest"
    first = _first(requests, kind)
    assert isinstance(first, optimizer_service_pb2.UploadModelRequest)
    ref = check_metadata(first.metadata, max_bytes, caps)
    too_large = _model_too_large(max_bytes)
    with _spool(requests, kind, ref.size_bytes, ref.sha256, spool_dir, max_bytes, too_large) as spooled:
        path, head, ref.sha256 = spooled
        check_magic(head, ref.format, ref.filename)
        if caps is not None and ref.format == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
            prescan_torchscript_archive(path, caps=caps, display_name=ref.filename)
        yield path, ref


@contextmanager
def receive_dataset(
    requests: Iterator[optimizer_service_pb2.UploadDatasetRequest], spool_dir: Path | None, max_bytes: int
) -> Iterator[tuple[Path, model_pb2.DatasetRef]]:
    """Spool an UploadDataset stream to a temporary file, verified against its metadata.

    Yields the file and the declared ref (its structure is checked when it is
    stored, see :meth:`DatasetStore.put`); the file is removed afterwards.
    """
    kind = "UploadDatasetRequest"
    first = _first(requests, kind)
    assert isinstance(first, optimizer_service_pb2.UploadDatasetRequest)
    ref = check_dataset_metadata(first.metadata, max_bytes)
    too_large = _dataset_too_large(max_bytes)
    with _spool(requests, kind, ref.size_bytes, ref.sha256, spool_dir, max_bytes, too_large) as spooled:
        path, _, ref.sha256 = spooled
        yield path, ref


def check_magic(head: bytes, model_format: int, filename: str) -> None:
    """Reject bytes that cannot be a model of the declared format (full checks run in a worker)."""
    if model_format == model_pb2.MODEL_FORMAT_TORCHSCRIPT:
        if not head.startswith(b"PK\x03\x04"):
            raise _bad(f"{filename} is not a TorchScript archive (not a zip file)", "INVALID_MODEL")
        return
    # A serialized ModelProto starts with the tag of one of its first fields (a graph is required).
    tag = head[0] if head else 0
    field_number, wire_type = tag >> 3, tag & 7
    if field_number not in {1, 2, 3, 4, 5, 6, 7, 8, 10, 14} or wire_type not in {0, 2}:
        raise _bad(f"{filename} is not an ONNX model (not a serialized ModelProto)", "INVALID_MODEL")
