"""A fine-tune killed mid-way resumes from its checkpoint; a crash while parsing is not retried."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.jobs.durable import lease
from prunekit_server.jobs.execution.executor import FAULT_LABEL
from prunekit_server.rpc_status import from_status
from prunekit_server.server import start_server

from ...api.conftest import TEST_SETTINGS, new_bucket_uri
from ...api.jobflow import create, wait
from .finetune_flow import (
    artifact_attempts,
    checkpoint_keys,
    finetune_spec,
    single_manifest,
    upload_inputs,
    wait_cleaned,
)


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return new_bucket_uri(request.getfixturevalue("s3_endpoint"))
    return f"file://{tmp_path / 'store'}"


def test_a_finetune_killed_after_its_first_checkpoint_resumes_from_it(storage: str, tmp_path: Path) -> None:
    server = start_server(replace(TEST_SETTINGS, storage=storage, scratch_dir=str(tmp_path), max_attempts=3))
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            model, train = upload_inputs(stub, tmp_path)
            started = time.monotonic()
            job = create(stub, model, finetune_spec(train), labels={FAULT_LABEL: "sigkill@checkpoint"})
            updates = wait(stub, job.id)
            seconds = time.monotonic() - started
        done = updates[-1]
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
        assert done.attempt == 2
        assert done.report.finetune.attempts == 2
        run = done.report.finetune.runs[-1]
        assert run.resumed_from_step == 20
        assert run.steps == 60
        assert any(u.progress.finetune.checkpoint_step > 0 for u in updates)
        assert artifact_attempts(done) == {"2"}
        single_manifest(server.stores, done)
        assert wait_cleaned(server.stores, job.id) == []
        assert server.stores.jobs.active_job_ids() == []
        print(
            f"resumed from step {run.resumed_from_step} of {run.steps},",
            f"attempts {done.attempt}, {seconds:.1f} s",
        )
    finally:
        server.stop(grace=2.0)


def test_a_crash_while_parsing_the_model_is_not_retried(tmp_path: Path) -> None:
    server = start_server(
        replace(TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", scratch_dir=str(tmp_path))
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            model, train = upload_inputs(stub, tmp_path)
            job = create(stub, model, finetune_spec(train), labels={FAULT_LABEL: "segfault@ingest#*"})
            done = wait(stub, job.id)[-1]
        assert done.state == job_pb2.JOB_STATE_FAILED
        error = from_status(done.error)
        assert error.reason == "WORKER_CRASHED"
        assert error.metadata["stage"] == "ingest"
        assert done.attempt == 1
        assert server.stores.artifacts.manifest(job.id) is None
    finally:
        server.stop(grace=2.0)


def test_a_fine_tune_stopped_by_shutdown_is_released_and_resumed_by_the_next_server(tmp_path: Path) -> None:
    settings = replace(
        TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", scratch_dir=str(tmp_path), sweep_interval_s=0.2
    )
    first = start_server(settings)
    try:
        with grpc.insecure_channel(first.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            model, train = upload_inputs(stub, tmp_path)
            job = create(stub, model, finetune_spec(train), labels={FAULT_LABEL: "hang@checkpoint"})
            for update in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=180):
                if update.job.progress.finetune.checkpoint_step > 0:
                    break
    finally:
        first.stop(grace=0.5)
    released = first.stores.jobs.get(job.id)
    assert released.state == job_pb2.JOB_STATE_RUNNING
    assert lease.is_expired(released)
    second = start_server(replace(settings, server_id="next"))
    try:
        with grpc.insecure_channel(second.target) as channel:
            done = wait(pb_grpc.OptimizerServiceStub(channel), job.id)[-1]
    finally:
        second.stop(grace=2.0)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    assert done.attempt == 2
    assert done.report.finetune.runs[-1].resumed_from_step == 20


def test_a_fine_tune_whose_worker_dies_while_the_server_drains_is_released_not_failed(tmp_path: Path) -> None:
    server = start_server(
        replace(TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", scratch_dir=str(tmp_path))
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            model, train = upload_inputs(stub, tmp_path)
            job = create(stub, model, finetune_spec(train), labels={FAULT_LABEL: "sigkill@checkpoint"})
            for update in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=60):
                if update.job.state == job_pb2.JOB_STATE_RUNNING:
                    break
        server.stop(grace=120.0)
    finally:
        server.stop(grace=2.0)
    left = server.stores.jobs.get(job.id)
    assert left.state == job_pb2.JOB_STATE_RUNNING, left.error
    assert lease.is_expired(left)
    assert left.attempt == 1
    assert checkpoint_keys(server.stores, job.id), "the checkpoint to resume from is gone"
