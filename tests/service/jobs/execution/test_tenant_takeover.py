"""The background parts serve every tenant: a job of tenant team-a left by a dead server is found by
the sweeper, taken over, run on team-a's stores and cleaned up there."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from prunekit_server.jobs.durable import record
from prunekit_server.jobs.durable.stores import TenantStores
from prunekit_server.server import start_server
from prunekit_server.storage import open_store

from ...api.conftest import TEST_SETTINGS
from ..conftest import new_job_id


def test_a_dead_servers_job_of_another_tenant_is_taken_over_in_its_tenant(tmp_path: Path) -> None:
    storage = f"file://{tmp_path / 'store'}"
    dead = TenantStores.open(open_store(storage), "team-a", owner="server-a", lease_s=0.2)
    job_id = new_job_id(dead.jobs, tmp_path)
    settings = replace(TEST_SETTINGS, storage=storage, scratch_dir=str(tmp_path), sweep_interval_s=0.2)
    server = start_server(settings)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = dead.jobs.get(job_id)
            if record.is_terminal(job.state) and not dead.jobs.active_job_ids():
                break
            time.sleep(0.1)
    finally:
        server.stop(grace=2.0)
    assert job.state == record.SUCCEEDED, job.error
    assert dead.artifacts.manifest(job_id) is not None
    assert dead.jobs.active_job_ids() == []
    assert server.stores.jobs.list_jobs(10, "") == ([], ""), "nothing landed in tenant default"
