"""Active-jobs seats on a real store (file and S3): exact under racing replicas, freed by ended jobs and by
creates that never wrote their record, seeded from the jobs already running."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from prunekit.v1 import job_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.jobs.durable import record
from prunekit_server.jobs.durable.job_store import JobStore
from prunekit_server.jobs.durable.seats import Seats
from prunekit_server.storage import ObjectStore

from ...api.jobflow import quick_spec
from ..conftest import stored_model


def _take(seats: Seats, jobs: JobStore, job_id: str, limit: int) -> None:
    seats.take(job_id, limit, jobs.liveness, jobs.active_job_ids)


def test_racing_replicas_take_exactly_the_free_seats(object_store: ObjectStore) -> None:
    jobs = JobStore(object_store)
    replicas = [Seats(object_store, jobs.tenant) for _ in range(6)]
    barrier = threading.Barrier(len(replicas))
    taken: list[str] = []
    refused: list[str] = []

    def take(i: int, seats: Seats) -> None:
        job_id = record.new_job_id()
        barrier.wait()
        try:
            _take(seats, jobs, job_id, 3)
            taken.append(job_id)
        except ServiceError as exc:
            refused.append(exc.reason)

    threads = [threading.Thread(target=take, args=(i, s)) for i, s in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert (len(taken), refused) == (3, ["QUOTA_EXCEEDED"] * 3)
    assert set(replicas[0].held()) == set(taken)


def test_a_seat_is_freed_when_its_job_ends_or_its_record_never_appears(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    jobs = JobStore(object_store)
    model = stored_model(jobs, tmp_path)
    seats = Seats(object_store, jobs.tenant, grace_s=3600.0)
    job, _ = jobs.create(model, quick_spec(), "r1", {}, admit=lambda j: _take(seats, jobs, j, 2))
    unwritten = record.new_job_id()
    _take(seats, jobs, unwritten, 2)
    with pytest.raises(ServiceError) as caught:
        _take(seats, jobs, record.new_job_id(), 2)
    assert caught.value.metadata == {"quota": "active_jobs", "limit": "2", "usage": "2"}
    _take(seats, jobs, job.id, 2)

    jobs.mutate(job.id, lambda j: record.transition(j, job_pb2.JOB_STATE_CANCELLED) is None)
    after_end = record.new_job_id()
    _take(seats, jobs, after_end, 2)
    assert set(seats.held()) == {unwritten, after_end}

    impatient = Seats(object_store, jobs.tenant, grace_s=0.0)
    _take(impatient, jobs, "late", 2)
    assert set(impatient.held()) == {"late"}, "both seats without a record are freed at once"


def test_first_use_counts_the_jobs_already_running(object_store: ObjectStore, tmp_path: Path) -> None:
    jobs = JobStore(object_store)
    model = stored_model(jobs, tmp_path)
    running = [jobs.create(model, quick_spec(), f"r{i}", {})[0].id for i in range(2)]
    seats = Seats(object_store, jobs.tenant)
    with pytest.raises(ServiceError):
        _take(seats, jobs, record.new_job_id(), 2)
    third = record.new_job_id()
    _take(seats, jobs, third, 3)
    assert set(seats.held()) == {*running, third}


def test_jobs_created_while_the_quota_was_off_or_the_seats_unreadable_count(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    jobs = JobStore(object_store)
    model = stored_model(jobs, tmp_path)
    seats = Seats(object_store, jobs.tenant)
    first = record.new_job_id()
    _take(seats, jobs, first, 5)
    unseated = [jobs.create(model, quick_spec(), f"off-{i}", {})[0].id for i in range(2)]
    with pytest.raises(ServiceError):
        _take(seats, jobs, record.new_job_id(), 3)
    object_store.put_bytes(f"tenants/{jobs.tenant}/seats.json", b"{not json")
    with pytest.raises(ServiceError):
        _take(seats, jobs, record.new_job_id(), 2)
    third = record.new_job_id()
    _take(seats, jobs, third, 3)
    assert set(seats.held()) == {*unseated, third}
