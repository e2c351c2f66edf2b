"""The job store under concurrent writers: idempotent create with one request_id."""

from __future__ import annotations

import threading
from pathlib import Path

from google.protobuf import json_format

from prunekit.v1 import job_pb2
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.storage import ObjectStore

from ...api.jobflow import quick_spec
from ..conftest import stored_model


def test_concurrent_creates_with_one_request_id_make_one_job(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    model = stored_model(JobStore(object_store), tmp_path)
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def create(server: str) -> None:
        jobs = JobStore(object_store, owner=server, lease_s=30.0)
        barrier.wait()
        job, created = jobs.create(model, quick_spec(), "retried-request", {})
        results.append((job.id, created))

    for _ in range(5):
        results.clear()
        threads = [threading.Thread(target=create, args=(f"server-{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({job_id for job_id, _ in results}) == 1
        assert sum(created for _, created in results) <= 1, "two callers were told they created the job"


def test_a_record_an_older_server_wrote_reads_back_without_store_locations(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    jobs = JobStore(object_store)
    model = stored_model(jobs, tmp_path)
    job, _ = jobs.create(model, quick_spec(), "old", {"team": "a"})
    root = "tenants/default/"
    old = job_pb2.Job()
    old.CopyFrom(job)
    old.model.uri = object_store.uri_for(f"{root}models/{model.sha256}/model")
    old.spec.data.train.append(object_store.uri_for(f"{root}datasets/{'a' * 64}/data.npz"))
    attempt = f"{root}jobs/{job.id}/attempts/1/"
    old.artifacts.add(name="pruned.onnx", uri=object_store.uri_for(f"{attempt}pruned.onnx"))
    variant = old.report.variants.add(name="pruned")
    variant.uri = object_store.uri_for(f"{attempt}pruned.onnx")
    variant.files.add(uri=object_store.uri_for(f"{attempt}pruned.pt"))
    object_store.put_bytes(f"{root}jobs/{job.id}/job.json", json_format.MessageToJson(old).encode())

    shown = [jobs.get(job.id), jobs.list_jobs(10, "")[0][0], jobs.mutate(job.id, lambda j: False)]
    for read in shown:
        assert read.model.uri == f"prunekit://models/{model.sha256}/model"
        assert list(read.spec.data.train) == [f"prunekit://datasets/{'a' * 64}/data.npz"]
        assert read.artifacts[0].uri == f"prunekit://jobs/{job.id}/attempts/1/pruned.onnx"
        assert read.report.variants[0].uri == read.artifacts[0].uri
        assert read.report.variants[0].files[0].uri.endswith("/attempts/1/pruned.pt")
        assert dict(read.labels) == {"team": "a"}
        assert object_store.uri not in str(read)
