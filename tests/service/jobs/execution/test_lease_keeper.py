"""The lease keeper: renewal, loss to another owner (reported once), release."""

from __future__ import annotations

import time
from pathlib import Path

from prunekit.v1 import job_pb2
from prunekit_server.jobs.durable import lease
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.jobs.execution.lease_keeper import LeaseKeeper
from prunekit_server.storage import ObjectStore

from ..conftest import new_job_id


def test_keeper_renews_then_reports_a_takeover_once(object_store: ObjectStore, tmp_path: Path) -> None:
    jobs = JobStore(object_store, owner="server-a", lease_s=0.6)
    job_id = new_job_id(jobs, tmp_path)
    lost: list[str] = []
    keeper = LeaseKeeper(jobs, "server-a", 0.6, lost.append)
    keeper.hold(job_id)
    keeper.start()
    try:
        first = jobs.get(job_id).lease.expire_time.ToNanoseconds()
        time.sleep(0.9)
        renewed = jobs.get(job_id)
        assert renewed.lease.expire_time.ToNanoseconds() > first
        assert not lease.is_expired(renewed)

        def take_over(job: job_pb2.Job) -> bool:
            lease.stamp(job, "server-b", 30.0)
            return True

        jobs.mutate(job_id, take_over)
        deadline = time.monotonic() + 5
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost == [job_id]
        assert not keeper.holds(job_id)
        assert keeper.renew(job_id) is False
        assert jobs.get(job_id).lease.owner == "server-b"
        assert lost == [job_id]
    finally:
        keeper.stop()


def test_release_ends_the_lease_now_only_for_its_owner(object_store: ObjectStore, tmp_path: Path) -> None:
    jobs = JobStore(object_store, owner="server-a", lease_s=30.0)
    job_id = new_job_id(jobs, tmp_path)
    other = LeaseKeeper(jobs, "server-b", 30.0, lambda _: None)
    assert other.release(job_id) is False
    assert not lease.is_expired(jobs.get(job_id))
    keeper = LeaseKeeper(jobs, "server-a", 30.0, lambda _: None)
    keeper.hold(job_id)
    assert keeper.release(job_id) is True
    assert not keeper.holds(job_id)
    released = jobs.get(job_id)
    assert lease.is_expired(released)
    assert released.lease.owner == "server-a"
