"""The job store under concurrent writers: idempotent create with one request_id."""

from __future__ import annotations

import threading
from pathlib import Path

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
