"""DeleteJob through a real server on the file store and on S3 (SDK and CLI), and the retention pass:
old ended jobs deleted, then uploads no job references removed after their grace period, the tenant's
stored bytes following."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import prunekit
from prunekit.v1 import job_pb2
from prunekit_server.jobs.durable.deletion import delete_job
from prunekit_server.jobs.durable.stores import TenantStores
from prunekit_server.jobs.execution.retention import Retention
from prunekit_server.jobs.worker.faults import FAULT_LABEL
from prunekit_server.server import RunningServer
from prunekit_server.storage import open_store

from .conftest import file_server

QUICK = {
    "prune": {"method": "unstructured", "ratio": 0.5},
    "benchmark": {"warmup": 1, "iterations": 3, "max_seconds": 0.5},
    "evaluation": {"samples": 4},
}
DAY = 86400.0


def _client(server: RunningServer) -> prunekit.Client:
    return prunekit.Client(server.target, timeout=30, retries=1, token="", ca_file="")


def _job_keys(server: RunningServer, job_id: str) -> list[str]:
    store = server.tenants.store
    return [k for k in store.list_keys("tenants/default/") if job_id in k]


def test_delete_job_removes_everything_once(server: RunningServer, models: dict[str, Path]) -> None:
    usage = server.stores.usage
    with _client(server) as client:
        model = client.upload_model(models["mlp.onnx"])
        before = usage.stored_bytes()
        done = client.optimize(model, QUICK, request_id="to-delete")
        artifacts = sum(a.size_bytes for a in done.artifacts)
        assert usage.stored_bytes() == before + artifacts
        assert _job_keys(server, done.id)

        assert client.delete_job(done.id) is True
        assert _job_keys(server, done.id) == []
        assert usage.stored_bytes() == before
        with pytest.raises(prunekit.PrunekitError) as caught:
            client.get_job(done.id)
        assert caught.value.reason == "JOB_NOT_FOUND"
        assert done.id not in {job.id for job in client.iter_jobs()}
        assert client.delete_job(done.id) is False
        again = client.create_job(model, QUICK, request_id="to-delete")
        assert again.id != done.id, "the request id was freed with its job"

        client.wait(again.id)
        assert client.delete_job(again.id)
        assert usage.stored_bytes() == before


def test_a_running_job_is_refused_or_cancelled_first(server: RunningServer, models: dict[str, Path]) -> None:
    with _client(server) as client:
        model = client.upload_model(models["mlp.onnx"])
        job = client.create_job(model, QUICK, labels={FAULT_LABEL: "hang@ingest"})
        with pytest.raises(prunekit.PrunekitError) as caught:
            client.delete_job(job.id)
        assert (caught.value.reason, caught.value.metadata["job_id"]) == ("JOB_ACTIVE", job.id)
        env = {**os.environ, "PRUNEKIT_SERVER": server.target}
        env.pop("PRUNEKIT_TOKEN", None)
        env.pop("PRUNEKIT_CA_FILE", None)
        deleted = subprocess.run(
            [sys.executable, "-m", "prunekit.cli", "jobs", "delete", job.id, "--cancel", "--json"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(deleted.stdout) == {"job_id": job.id, "deleted": True}
        assert _job_keys(server, job.id) == []


def test_retention_deletes_old_jobs_then_unreferenced_uploads(
    server: RunningServer, models: dict[str, Path]
) -> None:
    usage = server.stores.usage
    with _client(server) as client:
        model = client.upload_model(models["cnn.onnx"])
        shard = client.upload_dataset(
            {"input": np.zeros((8, 3, 32, 32), np.float32), "label": np.arange(8) % 10}
        )
        done = client.optimize(model, {**QUICK, "data": {"eval": [shard.uri]}})
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED
        recent = client.create_job(client.upload_model(models["mlp.onnx"]), QUICK)
        client.wait(recent.id)
    retention = Retention(server.tenants, replace(server.settings, retention_days=1.0, gc_grace_hours=1.0))
    assert retention.run_once(now=time.time())[0] == 0, "nothing is a day old yet"
    everything_old = time.time() + 2 * DAY
    jobs, uploads = retention.run_once(now=everything_old)
    assert jobs >= 2
    assert uploads == 0, "a newly unreferenced upload is only marked"
    assert _job_keys(server, done.id) == []
    assert server.stores.models.find(model.sha256) is not None
    jobs, uploads = retention.run_once(now=everything_old + 2 * 3600)
    assert uploads >= 2
    assert server.stores.models.find(model.sha256) is None
    store = server.tenants.store
    assert [k for k in store.list_keys("tenants/default/") if model.sha256 in k or shard.sha256 in k] == []
    assert usage.stored_bytes() == 0
    with _client(server) as client:
        assert client.upload_model(models["cnn.onnx"]).sha256 == model.sha256


def test_two_replicas_deleting_one_job_take_its_bytes_off_once(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> None:
    with file_server(tmp_path_factory) as server, _client(server) as client:
        model = client.upload_model(models["mlp.onnx"])
        done = client.optimize(model, QUICK)
        replicas = [TenantStores.open(open_store(server.tenants.store.uri)) for _ in range(4)]
        usage = server.stores.usage
        before = usage.stored_bytes()
        results: list[bool] = []
        threads = [
            threading.Thread(target=lambda s=s: results.append(delete_job(s, done.id))) for s in replicas
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert results.count(True) >= 1
        assert before - usage.stored_bytes() == sum(a.size_bytes for a in done.artifacts)
        assert _job_keys(server, done.id) == []
