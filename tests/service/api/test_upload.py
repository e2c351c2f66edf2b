"""UploadModel: verified, content-addressed, capped while streaming; bad input leaves the server serving."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import model_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.api.upload import _Writer
from prunekit_server.errors import Code, ServiceError
from prunekit_server.server import RunningServer

from .conftest import assert_serving, file_server, status_error, upload_requests

CAP = 3 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A file-backed server with a 3 MiB upload cap (overrides the per-backend fixture)."""
    with file_server(tmp_path_factory, max_upload_bytes=CAP) as running:
        yield running


def call(
    stub: pb_grpc.OptimizerServiceStub, requests: Iterator[pb.UploadModelRequest]
) -> pb.UploadModelResponse:
    return stub.UploadModel(requests, timeout=30)


def rejected(
    stub: pb_grpc.OptimizerServiceStub, requests: Iterator[pb.UploadModelRequest]
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, requests)
    return caught.value.code(), status_error(caught.value).reason


def test_upload_is_verified_and_content_addressed(
    stub: pb_grpc.OptimizerServiceStub, server: RunningServer, models: dict[str, Path]
) -> None:
    data = models["mlp.onnx"].read_bytes()
    first = call(stub, upload_requests(data, chunk=64 << 10))
    assert first.model.sha256 == hashlib.sha256(data).hexdigest()
    assert first.model.size_bytes == len(data)
    assert first.model.format == model_pb2.MODEL_FORMAT_ONNX
    assert first.model.filename == "model.onnx"
    assert not first.deduplicated
    again = call(stub, upload_requests(data, filename="copy.onnx"))
    assert again.deduplicated
    assert again.model.uri == first.model.uri
    prefix = f"tenants/default/models/{first.model.sha256}/"
    assert len(server.stores.store.list_keys(prefix)) == 2


def test_without_a_declared_sha256_the_server_computes_it(
    stub: pb_grpc.OptimizerServiceStub, server: RunningServer
) -> None:
    data = b"\x08\x07" + os.urandom((1 << 20) + 5)
    stored = call(stub, upload_requests(data, sha256="")).model
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.uri == f"prunekit://models/{stored.sha256}/model"
    key = server.stores.models.uris.key_for_uri(stored.uri)
    assert server.stores.store.get_bytes(key) == data
    again = call(stub, upload_requests(data))
    assert again.deduplicated
    assert again.model.uri == stored.uri


def test_wrong_sha256_and_size_are_rejected(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, models: dict[str, Path]
) -> None:
    data = models["mlp.onnx"].read_bytes()
    assert rejected(stub, upload_requests(data, sha256="ab" * 32)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CHECKSUM_MISMATCH",
    )
    assert rejected(stub, upload_requests(data, size=len(data) + 10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIZE_MISMATCH",
    )
    assert rejected(stub, upload_requests(data, size=len(data) - 10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIZE_MISMATCH",
    )
    assert_serving(channel)


def test_over_the_cap_is_refused_while_streaming(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel
) -> None:
    big = b"\x08\x07" + os.urandom(CAP + (1 << 20))
    assert rejected(stub, upload_requests(big)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "MODEL_TOO_LARGE")
    lying = upload_requests(big, size=1 << 20)
    assert rejected(stub, lying) == (grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH")
    assert_serving(channel)


def test_non_model_bytes_and_malformed_streams(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel
) -> None:
    text = b"this is not a model at all\n" * 100
    assert rejected(stub, upload_requests(text)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MODEL")
    assert rejected(stub, upload_requests(text, model_pb2.MODEL_FORMAT_TORCHSCRIPT, filename="m.pt")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_MODEL",
    )
    assert rejected(stub, iter([pb.UploadModelRequest(chunk=b"x")])) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    no_format = pb.UploadMetadata(filename="m.onnx", size_bytes=1, sha256="0" * 64)
    code, reason = rejected(stub, iter([pb.UploadModelRequest(metadata=no_format)]))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    too_big_chunk = upload_requests(b"\x08" * (2 << 20), chunk=2 << 20)
    assert rejected(stub, too_big_chunk) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert_serving(channel)


def test_client_going_away_mid_upload_leaves_nothing(
    stub: pb_grpc.OptimizerServiceStub, server: RunningServer, channel: grpc.Channel
) -> None:
    data = b"\x08\x07" + os.urandom(2 << 20)

    def broken() -> Iterator[pb.UploadModelRequest]:
        stream = upload_requests(data)
        yield next(stream)
        yield next(stream)
        raise ConnectionError("client crashed")

    with pytest.raises(grpc.RpcError):
        call(stub, broken())
    spool = server.stores.store.spool_dir()
    assert spool is not None  # a file store: uploads are received beside the objects, then moved in
    deadline = time.monotonic() + 10
    while list(spool.glob("prunekit-upload-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(spool.glob("prunekit-upload-*"))
    assert not list(Path(server.settings.scratch_dir).glob("prunekit-upload-*"))
    assert server.stores.models.find(hashlib.sha256(data).hexdigest()) is None
    assert_serving(channel)


@pytest.mark.parametrize("damage", ["unparsable", "failing its sha256"])
def test_an_unreadable_model_metadata_object_is_healed_by_the_next_upload(
    stub: pb_grpc.OptimizerServiceStub, server: RunningServer, channel: grpc.Channel, damage: str
) -> None:
    data = b"\x08\x07" + os.urandom(4096)
    first = call(stub, upload_requests(data)).model
    key = f"tenants/default/models/{first.sha256}/meta.json"
    if damage == "unparsable":
        server.stores.store.put_bytes(key, b"{not json")
    else:  # the bytes change under the sha256 the store recorded (bit rot, a stray writer)
        with open(Path(server.stores.store.uri.removeprefix("file://")) / key, "r+b") as stored:
            stored.write(b" ")
    assert server.stores.models.find(first.sha256) is None
    with pytest.raises(grpc.RpcError) as caught:
        stub.AnalyzeModel(pb.AnalyzeModelRequest(model=first), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert status_error(caught.value).reason == "MODEL_NOT_FOUND"
    again = call(stub, upload_requests(data))
    assert not again.deduplicated
    assert again.model == first
    assert server.stores.models.find(first.sha256) == first
    assert_serving(channel)


@pytest.mark.parametrize("size", [100, 3 << 20])
def test_a_disk_full_while_receiving_is_storage_full_even_on_the_last_flush(size: int) -> None:
    """Small uploads fail only when the buffered bytes are flushed: that error must not be lost."""
    writer = _Writer(os.open("/dev/full", os.O_WRONLY))
    for offset in range(0, size, 1 << 20):
        writer.put(b"x" * min(1 << 20, size - offset))
    with pytest.raises(ServiceError) as caught:
        writer.close()
    assert (caught.value.code, caught.value.reason) == (Code.RESOURCE_EXHAUSTED, "STORAGE_FULL")
    assert caught.value.metadata == {"space": "store"}
    assert "No space left on device" in caught.value.message
