"""What clients read never shows where the server keeps things: every response, error, job record and
downloaded artifact of a whole flow, on the file store and on S3, is searched for the storage root, the
bucket and the scratch root. Stored objects are named ``prunekit://...``; storage URIs sent by older
clients still work."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from prunekit.v1 import job_pb2, model_pb2, spec_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import RunningServer
from tests.service.api.conftest import TEST_SETTINGS, start, status_error, upload, upload_requests
from tests.service.api.jobflow import create, quick_spec, wait


def _npz(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, input=rng.normal(size=(8, 64)).astype(np.float32), label=np.arange(8) % 10)
    return buffer.getvalue()


class Seen:
    """Everything a client was shown, as text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def message(self, message: Message) -> Any:
        self.texts.append(json_format.MessageToJson(message))
        return message

    def error(self, call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        error = status_error(caught.value)
        self.texts += [caught.value.details() or "", error.message, *error.metadata.values()]
        self.texts += [v.description for v in error.violations]
        return caught.value.code(), error.reason

    def leaks(self, secrets: list[str]) -> list[tuple[str, str]]:
        return [(secret, text[:300]) for text in self.texts for secret in secrets if secret in text]


@pytest.fixture(scope="module", params=["file", "s3"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"hidden-bucket-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        storage = f"s3://{bucket}/deploy-x"
    else:
        storage = f"file://{tmp_path_factory.mktemp('hidden-root')}"
    scratch = tmp_path_factory.mktemp("hidden-scratch")
    running = start(replace(TEST_SETTINGS, storage=storage, scratch_dir=str(scratch)))
    yield running
    running.stop(grace=2.0)


def _secrets(server: RunningServer) -> list[str]:
    uri = server.tenants.store.uri
    found = [uri, str(Path(server.settings.scratch_dir).parent)]  # the scratch root, not only this server's
    if uri.startswith("s3://"):
        found.append(uri.removeprefix("s3://").split("/")[0])
    else:
        found.append(uri.removeprefix("file://"))
    return found


def test_no_response_error_or_artifact_shows_a_storage_path(
    server: RunningServer, models: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    seen = Seen()
    store = server.tenants.store
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        model = seen.message(upload(stub, models["mlp.onnx"]))
        assert model.uri == f"prunekit://models/{model.sha256}/model"
        data = _npz(1)
        requests = [
            pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(filename="eval.npz", size_bytes=len(data))),
            pb.UploadDatasetRequest(chunk=data),
        ]
        shard = seen.message(stub.UploadDataset(iter(requests), timeout=60)).dataset
        assert shard.uri == f"prunekit://datasets/{shard.sha256}/data.npz"
        store.put_bytes("tenants/default/datasets/mine/a.npz", _npz(2))
        seen.message(stub.AnalyzeModel(pb.AnalyzeModelRequest(model=model), timeout=120))

        spec = quick_spec()
        spec.data.CopyFrom(spec_pb2.DataSpec(eval=[shard.uri, "prunekit://datasets/mine/"]))
        job = seen.message(create(stub, model, spec))
        updates = [seen.message(update) for update in wait(stub, job.id)]
        done = updates[-1]
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
        assert all(a.uri.startswith(f"prunekit://jobs/{job.id}/attempts/") for a in done.artifacts)
        seen.message(stub.GetJob(pb.GetJobRequest(job_id=job.id), timeout=30))
        seen.message(stub.ListJobs(pb.ListJobsRequest(), timeout=30))
        for artifact in done.artifacts:
            download = pb.DownloadArtifactRequest(job_id=job.id, name=artifact.name)
            for response in stub.DownloadArtifact(download, timeout=120):
                if response.HasField("info"):
                    seen.message(response)
                else:
                    seen.texts.append(response.chunk.decode("latin-1"))

        legacy = store.uri_for(f"tenants/default/datasets/{shard.sha256}/data.npz")
        spec.data.CopyFrom(spec_pb2.DataSpec(eval=[legacy]))
        older = create(
            stub, model_pb2.ModelRef(sha256=model.sha256, uri=store.uri_for(model_key(model))), spec
        )
        stub.CancelJob(pb.CancelJobRequest(job_id=older.id), timeout=30)

        missing = f"prunekit://datasets/{'ab' * 32}/data.npz"
        for entry, expected in (
            (missing, (grpc.StatusCode.NOT_FOUND, "DATASET_NOT_FOUND")),
            ("prunekit://models/x/model", (grpc.StatusCode.PERMISSION_DENIED, "DATASET_OUTSIDE_PREFIX")),
        ):
            spec.data.CopyFrom(spec_pb2.DataSpec(eval=[entry]))
            assert seen.error(lambda spec=spec: create(stub, model, spec)) == expected
        wrong = model_pb2.ModelRef(sha256=model.sha256, uri="prunekit://models/other/model")
        assert seen.error(lambda: create(stub, wrong))[1] == "MODEL_NOT_FOUND"
        assert (
            seen.error(lambda: stub.GetJob(pb.GetJobRequest(job_id="nope"), timeout=30))[1] == "JOB_NOT_FOUND"
        )
        s3 = store.uri.startswith("s3://")
        _storage_failure(server, stub, seen, request.getfixturevalue("s3_admin") if s3 else None)

    secrets = _secrets(server)
    if s3:
        secrets.append(request.getfixturevalue("s3_endpoint"))
    assert seen.leaks(secrets) == []


def model_key(model: model_pb2.ModelRef) -> str:
    return f"tenants/default/models/{model.sha256}/model"


def _storage_failure(
    server: RunningServer, stub: pb_grpc.OptimizerServiceStub, seen: Seen, admin: Any
) -> None:
    """A real storage failure whose own message names the store: on the file store an object that
    collides with a directory; on S3 a bucket that is gone."""
    store = server.tenants.store
    data = b"\x08\x07" + uuid.uuid4().bytes * 64
    if admin is None:
        digest = hashlib.sha256(data).hexdigest()
        root = Path(store.uri.removeprefix("file://"))
        (root / model_key(model_pb2.ModelRef(sha256=digest))).mkdir(parents=True)
        code, reason = seen.error(lambda: stub.UploadModel(upload_requests(data), timeout=30))
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "INTERNAL_ERROR")
        return
    bucket = store.uri.removeprefix("s3://").split("/")[0]
    for item in admin.list_objects_v2(Bucket=bucket).get("Contents", []):
        admin.delete_object(Bucket=bucket, Key=item["Key"])
    admin.delete_bucket(Bucket=bucket)
    code, reason = seen.error(lambda: stub.UploadModel(upload_requests(data), timeout=60))
    assert reason in {"STORAGE_UNAVAILABLE", "INTERNAL_ERROR"}, (code, reason)
