"""UploadDataset and a spec's data through a real server (file and moto S3), the SDK and the CLI."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import prunekit
from prunekit.cli import main as cli_main
from prunekit.v1 import model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.durable.dataset_store import DatasetStore
from prunekit_server.server import RunningServer

from ..test_npy_headers import encrypt, huge_header_member, npy, npz_bytes
from .conftest import TEST_SETTINGS, assert_serving, new_bucket_uri, start, status_error, upload
from .jobflow import quick_spec

CAP = 256 << 10


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def good_shard(samples: int = 10, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return npz(input=rng.normal(size=(samples, 16)).astype(np.float32), label=np.arange(samples) % 4)


@pytest.fixture(scope="module", params=["file", "s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server with a 256 KiB shard cap and at most 3 shards per job (overrides the per-backend fixture)."""
    if request.param == "s3":
        storage = new_bucket_uri(request.getfixturevalue("s3_endpoint"))
    else:
        storage = f"file://{tmp_path_factory.mktemp('storage')}"
    settings = replace(
        TEST_SETTINGS,
        storage=storage,
        scratch_dir=str(tmp_path_factory.mktemp("scratch")),
        max_dataset_upload_bytes=CAP,
        max_job_data_shards=3,
    )
    running = start(settings)
    yield running
    running.stop(grace=2.0)


@pytest.fixture(scope="module")
def datasets(server: RunningServer) -> DatasetStore:
    return DatasetStore.for_tenant(server.stores, server.settings)


def requests_for(
    data: bytes, *, filename: str = "train.npz", sha256: str | None = None, chunk: int = 64 << 10
) -> Iterator[pb.UploadDatasetRequest]:
    meta = pb.DatasetMetadata(
        filename=filename, size_bytes=len(data), sha256=sha256 or hashlib.sha256(data).hexdigest()
    )
    yield pb.UploadDatasetRequest(metadata=meta)
    for at in range(0, len(data), chunk):
        yield pb.UploadDatasetRequest(chunk=data[at : at + chunk])


def rejected(stub: pb_grpc.OptimizerServiceStub, requests: Iterator[pb.UploadDatasetRequest]) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadDataset(requests, timeout=30)
    return caught.value.code(), status_error(caught.value)


def test_upload_is_verified_content_addressed_and_deduplicated(
    stub: pb_grpc.OptimizerServiceStub, datasets: DatasetStore
) -> None:
    data = good_shard()
    first = stub.UploadDataset(requests_for(data, chunk=4096), timeout=30)
    ref = first.dataset
    assert not first.deduplicated
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert (ref.size_bytes, ref.filename, ref.samples, list(ref.arrays)) == (
        len(data),
        "train.npz",
        10,
        ["input", "label"],
    )
    assert ref.uri == f"prunekit://datasets/{ref.sha256}/data.npz"
    again = stub.UploadDataset(requests_for(data, filename="copy.npz"), timeout=30)
    assert again.deduplicated
    assert again.dataset == ref
    assert datasets.store.list_keys(f"tenants/default/datasets/{ref.sha256}/") == [
        f"tenants/default/datasets/{ref.sha256}/data.npz",
        f"tenants/default/datasets/{ref.sha256}/meta.json",
    ]


def _pickled() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, input=np.zeros((2, 3), np.float32), obj=np.array([{"a": 1}, None], dtype=object))
    return buffer.getvalue()


BAD_SHARDS = {
    "not-a-zip": (b"this is not a zip archive\n" * 10, {"bad.npz"}),
    "pickled-object-array": (_pickled(), {"bad.npz:obj"}),
    "sample-mismatch": (
        npz(input=np.zeros((5, 3), np.float32), label=np.zeros(4, np.int64)),
        {"bad.npz:input", "bad.npz:label"},
    ),
    "float-label": (npz(input=np.zeros((4, 3), np.float32), label=np.zeros(4)), {"bad.npz:label"}),
    "integer-target": (
        npz(input=np.zeros((4, 3), np.float32), target=np.zeros(4, np.int32)),
        {"bad.npz:target"},
    ),
    "encrypted-member": (encrypt(npz(input=np.zeros((4, 3), np.float32))), {"bad.npz:input"}),
    "negative-dimension": (
        npz_bytes({"input.npy": npy(np.zeros((4, 3), np.float32)).replace(b"(4, 3)", b"(-4, 3)")}),
        {"bad.npz:input"},
    ),
    "header-claims-64-mib": (npz_bytes({"input.npy": huge_header_member(64 << 20)}), {"bad.npz:input"}),
    "directory-entry": (
        npz_bytes({"sub/": b"", "input.npy": npy(np.zeros((4, 3), np.float32))}),
        {"bad.npz:sub/"},
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SHARDS))
def test_malformed_shards_are_rejected_naming_the_array(
    case: str, stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, datasets: DatasetStore
) -> None:
    kept = stub.UploadDataset(requests_for(good_shard(seed=1)), timeout=30).dataset
    data, fields = BAD_SHARDS[case]
    code, error = rejected(stub, requests_for(data, filename="bad.npz"))
    assert (code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATASET")
    assert {v.field for v in error.violations} == fields
    assert datasets.find(hashlib.sha256(data).hexdigest()) is None
    assert datasets.find(kept.sha256) == kept
    assert_serving(channel)


def test_caps_checksums_and_sizes(
    stub: pb_grpc.OptimizerServiceStub, channel: grpc.Channel, datasets: DatasetStore
) -> None:
    big = npz(input=np.zeros((CAP // 16, 4), np.float32))
    code, error = rejected(stub, requests_for(big))
    assert (code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATASET_TOO_LARGE")
    assert error.metadata == {"max_dataset_upload_bytes": str(CAP)}

    def lying() -> Iterator[pb.UploadDatasetRequest]:
        meta = pb.DatasetMetadata(filename="x.npz", size_bytes=1000, sha256=hashlib.sha256(big).hexdigest())
        yield pb.UploadDatasetRequest(metadata=meta)
        for at in range(0, len(big), 4096):
            yield pb.UploadDatasetRequest(chunk=big[at : at + 4096])

    code, error = rejected(stub, lying())
    assert (code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH")
    data = good_shard(seed=3)
    code, error = rejected(stub, requests_for(data, sha256="ab" * 32))
    assert (code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CHECKSUM_MISMATCH")
    code, error = rejected(stub, iter([pb.UploadDatasetRequest(chunk=b"PK")]))
    assert (code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert datasets.find(hashlib.sha256(data).hexdigest()) is None
    assert_serving(channel)


def _create(stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef, data: spec_pb2.DataSpec) -> Any:
    spec = quick_spec()
    spec.data.CopyFrom(data)
    request = pb.CreateJobRequest(model=model, spec=spec, request_id=uuid.uuid4().hex)
    return stub.CreateJob(request, timeout=30).job


def _create_error(
    stub: pb_grpc.OptimizerServiceStub, model: model_pb2.ModelRef, data: spec_pb2.DataSpec
) -> tuple[grpc.StatusCode, Any]:
    with pytest.raises(grpc.RpcError) as caught:
        _create(stub, model, data)
    return caught.value.code(), status_error(caught.value)


def test_create_job_resolves_data_before_storing_the_job(
    stub: pb_grpc.OptimizerServiceStub, server: RunningServer, datasets: DatasetStore, models: dict[str, Path]
) -> None:
    model = upload(stub, models["mlp.onnx"])
    jobs_before = len(server.stores.jobs.list_jobs(100, "")[0])
    missing = f"prunekit://datasets/{'cd' * 32}/data.npz"
    code, error = _create_error(stub, model, spec_pb2.DataSpec(train=[missing]))
    assert (code, error.reason, error.metadata["entry"]) == (
        grpc.StatusCode.NOT_FOUND,
        "DATASET_NOT_FOUND",
        missing,
    )
    for outside in (model.uri, datasets.store.uri_for(f"tenants/default/models/{model.sha256}/model")):
        code, error = _create_error(stub, model, spec_pb2.DataSpec(eval=[outside]))
        assert (code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "DATASET_OUTSIDE_PREFIX")
    code, error = _create_error(stub, model, spec_pb2.DataSpec(train=["train.npz"]))
    assert (code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SPEC")
    assert [v.field for v in error.violations] == ["spec.data.train[0]"]
    for i in range(4):
        datasets.store.put_bytes(f"tenants/default/datasets/many/{i}.npz", good_shard(seed=i))
    folder = datasets.prefix_uri + "many/"
    code, error = _create_error(stub, model, spec_pb2.DataSpec(train=[folder]))
    assert (code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATASET_TOO_LARGE")
    assert len(server.stores.jobs.list_jobs(100, "")[0]) == jobs_before
    assert datasets.resolve(spec_pb2.DataSpec(eval=[folder + "1.npz"])).eval[0].uri == folder + "1.npz"
    ref = stub.UploadDataset(requests_for(good_shard(seed=7)), timeout=30).dataset
    job = _create(stub, model, spec_pb2.DataSpec(train=[ref.uri], eval=[folder + "1.npz"]))
    assert list(job.spec.data.train) == [ref.uri]
    stub.CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=30)


def test_sdk_uploads_from_arrays_and_from_a_path(server: RunningServer, tmp_path: Path) -> None:
    x = np.random.default_rng(4).normal(size=(12, 16)).astype(np.float32)
    y = np.arange(12) % 3
    with prunekit.Client(server.target, timeout=30) as client:
        from_arrays = client.upload_dataset({"input": x, "label": y})
        assert (from_arrays.filename, from_arrays.samples, list(from_arrays.arrays)) == (
            "dataset.npz",
            12,
            ["input", "label"],
        )
        path = tmp_path / "digits-train.npz"
        path.write_bytes(npz(input=x, label=y))
        from_path = client.upload_dataset(path)
        assert from_path.filename == "digits-train.npz"
        assert from_path.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        named = client.upload_dataset(os.fspath(path), filename="renamed.npz")
        assert named.uri == from_path.uri
        with pytest.raises(prunekit.PrunekitError) as caught:
            client.upload_dataset({"input": x, "label": y[:5]}, filename="short.npz")
        assert caught.value.reason == "INVALID_DATASET"
        assert {v[0] for v in caught.value.violations} == {"short.npz:input", "short.npz:label"}
        with pytest.raises(ValueError, match="Python objects"):
            client.upload_dataset({"input": [{"a": 1}]})


def test_cli_upload_dataset_prints_each_uri(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for seed in (11, 12):
        path = tmp_path / f"shard-{seed}.npz"
        path.write_bytes(good_shard(samples=6, seed=seed))
        paths.append(str(path))
    assert cli_main(["--server", server.target, "upload-dataset", *paths]) == 0
    captured = capsys.readouterr()
    uris = captured.out.split()
    assert len(uris) == 2
    assert all(uri.endswith("/data.npz") and "/datasets/" in uri for uri in uris)
    assert "shard-11.npz" in captured.err
    assert "6 samples: input, label" in captured.err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    assert cli_main(["--server", server.target, "upload-dataset", str(bad)]) == 1
    assert "INVALID_DATASET" in capsys.readouterr().err
