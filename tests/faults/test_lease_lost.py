"""Issue 11: an S3 outage longer than the job's lease, mid-fine-tune. The worker is stopped by its fence,
the server gives the job up, and once storage answers the job is taken over and resumes from its
checkpoint: it SUCCEEDS with ``max_attempts`` 1, since none of this is charged to the job.

In ``make soak`` the outage lasts 60 s against the default 30 s lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from prunekit_server.jobs.execution.executor import FAULT_LABEL

from ..service.api.jobflow import create
from ..service.jobs.execution.finetune_flow import finetune_spec, upload_inputs
from .conftest import assert_job_gone_from, assert_published_once, stores_of
from .harness import OUTAGE_S, Faulty, Prober, faulty_server, poll_job, wait_stage
from .s3_proxy import S3Proxy

LEASE_S = min(max(OUTAGE_S / 2, 3.0), 30.0)
DOWN_S = max(OUTAGE_S, 2 * LEASE_S)
"""Twice the lease: the server gives the job up well before storage answers again."""


@pytest.fixture(scope="module")
def server(proxy: S3Proxy, storage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    env = {
        "AWS_ENDPOINT_URL": proxy.url,
        "PRUNEKIT_LEASE_S": str(LEASE_S),
        "PRUNEKIT_SWEEP_INTERVAL_S": str(LEASE_S / 4),
        "PRUNEKIT_MAX_ATTEMPTS": "1",
    }
    with faulty_server(storage, tmp_path_factory.mktemp("lease-lost"), env) as running:
        yield running


def test_an_outage_longer_than_the_lease_mid_fine_tune_is_resumed_uncharged(
    server: Faulty, proxy: S3Proxy, storage: str, tmp_path: Path
) -> None:
    model, train = upload_inputs(server.stub, tmp_path)
    hang_after_first_checkpoint = {FAULT_LABEL: "hang@checkpoint"}  # the first start only: a long run
    job = create(server.stub, model, finetune_spec(train), labels=hang_after_first_checkpoint)
    wait_stage(server.stub, job.id, lambda j: j.progress.finetune.checkpoint_step > 0)
    tracebacks = server.log_text().count("Traceback")
    proxy.down(DOWN_S)
    with Prober(server.process.target, job.id) as probe:
        done = poll_job(server.stub, job.id)
    print(probe.check())
    assert_published_once(stores_of(storage), done)
    assert done.charged_attempts == 1, "the outage was charged against max_attempts"
    assert done.attempt >= 2
    assert done.report.finetune.attempts == done.attempt
    assert done.report.finetune.runs[-1].resumed_from_step >= 20
    log = server.log_text()
    assert "giving the job up" in log
    assert "taken over" in log
    assert server.outage_lines() == 1
    assert log.count("Traceback") == tracebacks
    assert_job_gone_from(server, job.id)
