"""Moving model, dataset and artifact bytes: chunked upload requests and verified, atomic downloads."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
from google.protobuf.message import Message

from prunekit._errors import PrunekitError
from prunekit._retry import RetryPolicy
from prunekit.v1 import job_pb2, optimizer_service_pb2

__all__ = [
    "CHUNK_SIZE",
    "StreamedFile",
    "artifact_path",
    "dataset_requests",
    "download",
    "receive",
    "require_succeeded",
    "upload",
    "upload_requests",
]

CHUNK_SIZE = 1024 * 1024
"""Bytes per streamed chunk: 1 MiB, the API's maximum, well under gRPC's 4 MiB default message limit."""


class StreamedFile:
    """The bytes of one file as upload chunks, hashed as they are read: one pass over the file.

    Each call of :meth:`requests` starts from the beginning (a retry re-reads the file) and resets
    :attr:`sha256`, which holds the digest of everything sent once the chunks ran out.
    """

    def __init__(self, path: Path, on_sent: Callable[[int, int], None] | None = None) -> None:
        self.path = path
        self.size_bytes = path.stat().st_size
        self.sha256 = ""
        self._on_sent = on_sent

    def chunks(self) -> Iterator[bytes]:
        """The file's chunks; ``on_sent(bytes so far, size)`` after each one is handed on."""
        self.sha256 = ""
        digest = hashlib.sha256()
        sent = 0
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
                yield chunk
                sent += len(chunk)
                if self._on_sent is not None:
                    self._on_sent(sent, self.size_bytes)
        self.sha256 = digest.hexdigest()

    def digest(self) -> str:
        """The file's sha256 from a pass of its own (for servers that need it before the bytes)."""
        sha = hashlib.sha256()
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                sha.update(chunk)
        return sha.hexdigest()

    def check(self, stored_sha256: str) -> None:
        """``DATA_LOSS`` / ``CHECKSUM_MISMATCH`` unless the server stored the bytes that were sent."""
        if not self.sha256 or stored_sha256.lower() != self.sha256:
            raise PrunekitError(
                grpc.StatusCode.DATA_LOSS,
                f"{self.path.name}: the server stored sha256 {stored_sha256 or '(none)'}, "
                f"but the bytes sent have {self.sha256 or '(not all sent)'}",
                reason="CHECKSUM_MISMATCH",
            )


def upload_requests(
    file: StreamedFile, metadata: optimizer_service_pb2.UploadMetadata
) -> Iterator[optimizer_service_pb2.UploadModelRequest]:
    """The ``metadata`` message, then the file in chunks of at most :data:`CHUNK_SIZE` bytes.

    The file is opened when the first chunk is asked for and closed when the iterator ends or is dropped, so a
    new iterator per attempt re-reads the file from the start.
    """
    yield optimizer_service_pb2.UploadModelRequest(metadata=metadata)
    for chunk in file.chunks():
        yield optimizer_service_pb2.UploadModelRequest(chunk=chunk)


def dataset_requests(
    file: StreamedFile, metadata: optimizer_service_pb2.DatasetMetadata
) -> Iterator[optimizer_service_pb2.UploadDatasetRequest]:
    """Like :func:`upload_requests`, for UploadDataset."""
    yield optimizer_service_pb2.UploadDatasetRequest(metadata=metadata)
    for chunk in file.chunks():
        yield optimizer_service_pb2.UploadDatasetRequest(chunk=chunk)


def upload(
    method: Any,
    requests: Callable[[], Iterator[Message]],
    streamed: StreamedFile,
    metadata: optimizer_service_pb2.UploadMetadata | optimizer_service_pb2.DatasetMetadata,
    retry: RetryPolicy,
    deadline: float,
) -> Any:
    """One client-streaming upload call, ``deadline`` per attempt, restarted from the first message on retry.

    The metadata declares no sha256 (the file is hashed while it streams); when the server is one that
    requires it up front (INVALID_ARGUMENT on ``metadata.sha256``) the file is hashed and sent once more.
    """

    def send() -> Any:
        return retry.call(lambda _retry: method(requests(), timeout=deadline))

    try:
        return send()
    except PrunekitError as exc:
        needs_digest = any(field == "metadata.sha256" for field, _ in exc.violations)
        if exc.code != grpc.StatusCode.INVALID_ARGUMENT or not needs_digest or metadata.sha256:
            raise
    metadata.sha256 = streamed.digest()
    return send()


def artifact_path(directory: Path, name: str) -> Path:
    """Where artifact ``name`` goes under ``directory``; refuses names that would escape it."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or name.startswith("~"):
        raise PrunekitError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"refusing artifact name {name!r}: it would be written outside {directory}",
            reason="INVALID_REQUEST",
        )
    return directory.joinpath(*pure.parts)


def require_succeeded(job: job_pb2.Job) -> job_pb2.Job:
    """``job`` when it succeeded (only then has it artifacts), else ``FAILED_PRECONDITION`` /
    ``JOB_NOT_SUCCEEDED`` carrying the job."""
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        raise PrunekitError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"job {job.id} is {job_pb2.JobState.Name(job.state)}; only a succeeded job has artifacts",
            reason="JOB_NOT_SUCCEEDED",
            job=job,
        )
    return job


def download(
    method: Any,
    request: optimizer_service_pb2.DownloadArtifactRequest,
    dest: Path,
    retry: RetryPolicy,
    deadline: float,
    on_received: Callable[[int, int], None] | None = None,
) -> job_pb2.Artifact:
    """One DownloadArtifact call into ``dest`` (see :func:`receive`), ``deadline`` per attempt, restarted
    from the first byte on retry; the stream is cancelled whatever happens."""

    def attempt(_retry: int) -> job_pb2.Artifact:
        call = method(request, timeout=deadline)
        try:
            return receive(call, dest, on_received)
        finally:
            call.cancel()

    return retry.call(attempt)


def receive(
    responses: Iterable[optimizer_service_pb2.DownloadArtifactResponse],
    dest: Path,
    on_received: Callable[[int, int], None] | None = None,
) -> job_pb2.Artifact:
    """Writes a DownloadArtifact stream to ``dest`` atomically and returns its ``info``.

    ``on_received(bytes, total)`` follows the stream: after the info message and after every chunk.

    Chunks go to a temporary file beside ``dest``; it replaces ``dest`` only when the byte count and SHA-256
    match the ``info`` message (the digest when it carries one), and is removed otherwise. A stream that does
    not start with ``info`` is an ``INTERNAL`` error; a mismatch is ``DATA_LOSS`` (reason
    ``CHECKSUM_MISMATCH`` or ``SIZE_MISMATCH``).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        info: job_pb2.Artifact | None = None
        sha = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for response in responses:
                kind = response.WhichOneof("payload")
                if info is None:
                    if kind != "info":
                        raise PrunekitError(
                            grpc.StatusCode.INTERNAL, "download stream did not start with artifact info"
                        )
                    info = job_pb2.Artifact()
                    info.CopyFrom(response.info)
                    if on_received is not None:
                        on_received(0, info.size_bytes)
                    continue
                if kind != "chunk":
                    raise PrunekitError(
                        grpc.StatusCode.INTERNAL, "download stream sent a second info message"
                    )
                out.write(response.chunk)
                sha.update(response.chunk)
                size += len(response.chunk)
                if on_received is not None:
                    on_received(size, info.size_bytes)
        if info is None:
            raise PrunekitError(grpc.StatusCode.INTERNAL, "download stream ended before artifact info")
        if size != info.size_bytes:
            raise PrunekitError(
                grpc.StatusCode.DATA_LOSS,
                f"{info.name}: received {size} bytes, expected {info.size_bytes}",
                reason="SIZE_MISMATCH",
            )
        if info.sha256 and sha.hexdigest() != info.sha256.lower():
            raise PrunekitError(
                grpc.StatusCode.DATA_LOSS,
                f"{info.name}: sha256 {sha.hexdigest()} does not match {info.sha256}",
                reason="CHECKSUM_MISMATCH",
            )
        os.replace(tmp, dest)
        return info
    finally:
        tmp.unlink(missing_ok=True)
