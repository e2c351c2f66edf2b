"""Receiving a model upload stream: metadata first, then chunks, checked while they arrive."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prunekit.v1 import model_pb2, optimizer_service_pb2

from ..errors import Code, FieldViolation, ServiceError
from ..jobs.store import is_sha256

MAX_CHUNK_BYTES = 1 << 20
_FORMATS = {model_pb2.MODEL_FORMAT_ONNX, model_pb2.MODEL_FORMAT_TORCHSCRIPT}


def _bad(message: str, reason: str = "INVALID_REQUEST", **violations: str) -> ServiceError:
    return ServiceError(
        Code.INVALID_ARGUMENT, reason, message, [FieldViolation(k, v) for k, v in violations.items()]
    )


def _too_large(limit: int) -> ServiceError:
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "MODEL_TOO_LARGE",
        f"the model is larger than this server's {limit} byte limit",
        metadata={"max_upload_bytes": str(limit)},
    )


def check_metadata(meta: optimizer_service_pb2.UploadMetadata, max_bytes: int) -> model_pb2.ModelRef:
    """The ModelRef an upload declares, once every metadata field is valid."""
    violations: dict[str, str] = {}
    filename = os.path.basename(meta.filename.replace("\\", "/"))
    if not filename or len(filename) > 255 or not filename.isprintable():
        violations["metadata.filename"] = "a file name of 1 to 255 printable characters"
    if meta.format not in _FORMATS:
        violations["metadata.format"] = "MODEL_FORMAT_ONNX or MODEL_FORMAT_TORCHSCRIPT"
    if meta.size_bytes <= 0:
        violations["metadata.size_bytes"] = "the total size, > 0"
    if not is_sha256(meta.sha256.lower()):
        violations["metadata.sha256"] = "64 hex digits"
    if violations:
        raise _bad("invalid upload metadata", **violations)
    if meta.size_bytes > max_bytes:
        raise _too_large(max_bytes)
    return model_pb2.ModelRef(
        sha256=meta.sha256.lower(), size_bytes=meta.size_bytes, format=meta.format, filename=filename
    )


@contextmanager
def receive_upload(
    requests: Iterator[optimizer_service_pb2.UploadModelRequest], spool_dir: Path | None, max_bytes: int
) -> Iterator[tuple[Path, model_pb2.ModelRef]]:
    """Spool an upload stream to a temporary file, verified against its metadata.

    Yields the file and the declared ref; the file is removed afterwards,
    also when the client goes away mid-stream.
    """
    first = next(requests, None)
    if first is None or first.WhichOneof("payload") != "metadata":
        raise _bad(
            "the first UploadModelRequest must carry metadata", metadata="required in the first message"
        )
    ref = check_metadata(first.metadata, max_bytes)
    fd, name = tempfile.mkstemp(prefix="prunekit-upload-", dir=spool_dir)
    path = Path(name)
    try:
        digest = hashlib.sha256()
        received = 0
        head = b""
        with os.fdopen(fd, "wb") as out:
            for message in requests:
                if message.WhichOneof("payload") != "chunk":
                    raise _bad("only the first UploadModelRequest carries metadata", chunk="expected a chunk")
                chunk = message.chunk
                if len(chunk) > MAX_CHUNK_BYTES:
                    raise _bad(f"chunks must be at most {MAX_CHUNK_BYTES} bytes", chunk=f"{len(chunk)} bytes")
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(max_bytes)
                if received > ref.size_bytes:
                    raise _bad(f"more than the declared {ref.size_bytes} bytes arrived", "SIZE_MISMATCH")
                if len(head) < 8:
                    head += chunk[: 8 - len(head)]
                digest.update(chunk)
                out.write(chunk)
        if received != ref.size_bytes:
            raise _bad(f"{received} bytes arrived, {ref.size_bytes} were declared", "SIZE_MISMATCH")
        if digest.hexdigest() != ref.sha256:
            raise _bad(
                f"the bytes' sha256 is {digest.hexdigest()}, the metadata declared {ref.sha256}",
                "CHECKSUM_MISMATCH",
            )
        check_magic(head, ref.format, ref.filename)
        yield path, ref
    finally:
        path.unlink(missing_ok=True)


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
