"""The bombs of issue 11 through a real server: refused in seconds, naming the cap (the deflate bomb at
UploadModel, before it is stored); spec caps at CreateJob."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.errors import ServiceError
from prunekit_server.rpc_status import from_status
from prunekit_server.server import RunningServer
from tests.bombs import huge_input_model, inlining_bomb, write_deflate_bomb

from .conftest import TEST_SETTINGS, file_server, start, status_error, upload, upload_requests
from .jobflow import create, quick_spec, wait

MEMORY = 16 << 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with file_server(tmp_path_factory, worker_memory_bytes=MEMORY) as running:
        yield running


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    (root / "inlining.onnx").write_bytes(inlining_bomb(31).SerializeToString())
    (root / "wide.onnx").write_bytes(huge_input_model(10**9).SerializeToString())
    (root / "batched.onnx").write_bytes(huge_input_model(1 << 20, batch="batch").SerializeToString())
    write_deflate_bomb(root / "deflate.pt")
    return {p.name: p for p in root.iterdir()}


def _refused_analysis(
    stub: pb_grpc.OptimizerServiceStub, path: Path, inputs: list[model_pb2.InputSpec]
) -> tuple[dict[str, str], float]:
    model = upload(stub, path)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model, inputs=inputs), timeout=60)
    seconds = time.monotonic() - started
    error = status_error(info.value)
    assert (error.code.name, error.reason) == ("RESOURCE_EXHAUSTED", "MODEL_TOO_LARGE"), error
    assert error.metadata["worker_memory_bytes"] == str(MEMORY)
    return error.metadata, seconds


def test_the_bombs_are_refused_in_seconds(
    stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path], bombs: dict[str, Path]
) -> None:
    warm = upload(stub, models["mlp.onnx"])
    assert stub.AnalyzeModel(pb.AnalyzeModelRequest(model=warm), timeout=120).analysis.parameters > 0
    took: dict[str, float] = {}
    meta, took["inlining"] = _refused_analysis(stub, bombs["inlining.onnx"], [])
    assert meta["max_nodes"] == "200000"
    meta, took["input"] = _refused_analysis(stub, bombs["wide.onnx"], [])
    assert meta["max_input_bytes"] == str(MEMORY // 16)
    print({name: f"{seconds:.2f} s" for name, seconds in took.items()})
    assert max(took.values()) < 5

    job = create(stub, upload(stub, bombs["inlining.onnx"]))
    final = wait(stub, job.id, timeout=120)[-1]
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert from_status(final.error).reason == "MODEL_TOO_LARGE"

    spec = quick_spec()
    spec.benchmark.batch_sizes.extend([1, 4096])
    job = create(stub, upload(stub, bombs["batched.onnx"]), spec)
    final = wait(stub, job.id, timeout=120)[-1]
    error = from_status(final.error)
    assert (final.state, error.reason) == (job_pb2.JOB_STATE_FAILED, "MODEL_TOO_LARGE")
    assert error.metadata["max_input_bytes"] == str(MEMORY // 16)


def _refused_upload(stub: pb_grpc.OptimizerServiceStub, path: Path, sha256: str = "") -> ServiceError:
    fmt = model_pb2.MODEL_FORMAT_TORCHSCRIPT if path.suffix == ".pt" else model_pb2.MODEL_FORMAT_ONNX
    data = path.read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub.UploadModel(upload_requests(data, fmt, filename=path.name, sha256=sha256), timeout=60)
    return status_error(info.value)


def test_the_deflate_bomb_is_refused_at_upload_and_not_stored(
    server: RunningServer, stub: pb_grpc.OptimizerServiceStub, bombs: dict[str, Path]
) -> None:
    store = server.tenants.store
    before = store.list_keys("")
    started = time.monotonic()
    error = _refused_upload(stub, bombs["deflate.pt"])
    seconds = time.monotonic() - started
    assert (error.code.name, error.reason) == ("RESOURCE_EXHAUSTED", "MODEL_TOO_LARGE"), error
    assert error.metadata["max_tensor_bytes"] == str(MEMORY // 4)
    assert "max_tensor_bytes" in error.message
    assert "deflate.pt would unpack to" in error.message
    print(f"deflate bomb ({bombs['deflate.pt'].stat().st_size} B) refused at UploadModel in {seconds:.2f} s")
    assert seconds < 5, seconds
    # earlier jobs may still settle their bookkeeping (active entry, usage); the upload must add nothing
    added = set(store.list_keys("")) - set(before)
    assert not [key for key in added if "/models/" in key or "/requests/" in key], added
    spool = store.spool_dir()
    assert spool is None or not any(spool.iterdir())


def test_a_small_workers_caps_refuse_files_before_their_bytes_arrive(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    memory = 64 << 20
    settings = replace(
        TEST_SETTINGS,
        storage=f"file://{tmp_path / 'store'}",
        scratch_dir=str(tmp_path / "scratch"),
        worker_memory_bytes=memory,
        warm_workers=False,
    )
    running = start(settings)
    try:
        with grpc.insecure_channel(running.target) as channel:
            small = pb_grpc.OptimizerServiceStub(channel)
            declared = pb.UploadMetadata(
                filename="big.onnx", format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=(memory // 4) + 1
            )
            with pytest.raises(grpc.RpcError) as info:
                small.UploadModel(iter([pb.UploadModelRequest(metadata=declared)]), timeout=30)
            error = status_error(info.value)
            assert (error.reason, error.metadata["max_tensor_bytes"]) == ("MODEL_TOO_LARGE", str(memory // 4))
            assert "big.onnx is 16777217 bytes" in error.message
            bomb = write_deflate_bomb(tmp_path / "small-bomb.pt", size=64 << 20)
            assert _refused_upload(small, bomb).metadata["max_tensor_bytes"] == str(memory // 4)
            stored = upload(small, models["cnn.pt"])
        keys = running.tenants.store.list_keys("tenants/default/models/")
        assert keys
        assert all(stored.sha256 in key for key in keys)
    finally:
        running.stop(grace=1.0)


def test_create_job_applies_the_servers_caps(
    server: RunningServer, stub: pb_grpc.OptimizerServiceStub, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    spec = quick_spec()
    spec.inputs.append(model_pb2.InputSpec(name="features", shape=[1024, 1 << 20]))
    spec.finetune.CopyFrom(spec_pb2.FinetuneSpec(epochs=2147483647, max_seconds=1e9))
    spec.data.train.append("s3://elsewhere/train.npz")
    with pytest.raises(grpc.RpcError) as info:
        create(stub, model, spec)
    error = status_error(info.value)
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "INVALID_SPEC")
    found = {v.field: v.description for v in error.violations}
    assert found["spec.finetune.epochs"] == "at most 1000 on this server (max_finetune_epochs)"
    assert found["spec.finetune.max_seconds"] == "at most 86400 on this server (max_finetune_seconds)"
    assert f"at most {server.executor.model_caps.max_input_bytes} (max_input_bytes)" in found["spec.inputs"]

    wide = [model_pb2.InputSpec(name="features", shape=[1024, 1 << 20])]
    with pytest.raises(grpc.RpcError) as info:
        stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model, inputs=wide), timeout=30)
    assert [v.field for v in status_error(info.value).violations] == ["inputs"]
