"""Leases on the job record: server ids, stamping at create, expiry, one winner among claims.

Renewal, loss and release are the lease keeper's: see ``execution/test_lease_keeper.py``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prunekit.v1 import job_pb2
from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.durable import lease, record
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.storage import ObjectStore

from ..conftest import new_job_id


def test_server_ids_are_unique_unless_configured() -> None:
    assert lease.new_server_id("node-a") == "node-a"
    first, second = lease.new_server_id(), lease.new_server_id()
    assert first != second
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0]


def test_stamp_and_expiry() -> None:
    job = job_pb2.Job(id="job-x")
    assert lease.is_expired(job)
    lease.stamp(job, "a", 5.0)
    assert job.lease.owner == "a"
    assert not lease.is_expired(job)
    assert lease.is_expired(job, now_ns=time.time_ns() + 6 * 10**9)
    lease.expire_now(job)
    assert lease.is_expired(job)
    assert job.lease.owner == "a"


def test_create_leases_the_job_and_indexes_it(object_store: ObjectStore, tmp_path: Path) -> None:
    jobs = JobStore(object_store, owner="server-a", lease_s=30.0)
    job_id = new_job_id(jobs, tmp_path)
    job = jobs.get(job_id)
    assert job.lease.owner == "server-a"
    assert not lease.is_expired(job)
    assert jobs.active_job_ids() == [job_id]
    ended = jobs.mutate(
        job_id, lambda j: record.fail(j, ServiceError(Code.INTERNAL, "WORKER_CRASHED", "x")) or True
    )
    assert ended.state == record.FAILED
    assert not ended.HasField("lease")
    jobs.forget_active(job_id)
    assert jobs.active_job_ids() == []


def test_concurrent_claims_have_one_winner(object_store: ObjectStore, tmp_path: Path) -> None:
    jobs = JobStore(object_store, owner="dead", lease_s=0.01)
    job_id = new_job_id(jobs, tmp_path)
    time.sleep(0.05)
    winners: list[str] = []

    def claim(owner: str) -> None:
        won = False

        def change(job: job_pb2.Job) -> bool:
            nonlocal won
            won = lease.is_expired(job)
            if won:
                lease.stamp(job, owner, 30.0)
            return won

        JobStore(object_store).mutate(job_id, change)
        if won:
            winners.append(owner)

    threads = [threading.Thread(target=claim, args=(f"server-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert jobs.get(job_id).lease.owner == winners[0]
