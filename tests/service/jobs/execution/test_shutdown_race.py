"""A CreateJob that races a server's shutdown: the job it made is handed on at once, not after a lease."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prunekit_server.jobs.durable import lease
from prunekit_server.server import start_server
from tests.service.api.conftest import TEST_SETTINGS
from tests.service.api.jobflow import quick_spec

from ..conftest import stored_model


def test_a_job_created_while_the_server_stops_is_released_at_once(tmp_path: Path) -> None:
    settings = replace(TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", lease_s=600.0)
    server = start_server(settings)
    model = stored_model(server.stores.jobs, tmp_path)
    server.executor.reserve()  # CreateJob took its place ...
    server.stop(grace=1.0)  # ... the server began shutting down ...
    job, created = server.stores.jobs.create(model, quick_spec(), "raced", {})  # ... the record was written
    assert created
    assert job.lease.owner == server.executor.owner
    assert not lease.is_expired(job)
    server.executor.submit(job.id)
    stored = server.stores.jobs.get(job.id)
    assert lease.is_expired(stored), "the job would wait a whole lease (600 s) for another server"
    assert stored.state == job.state
    assert not server.executor.holds(job.id)
