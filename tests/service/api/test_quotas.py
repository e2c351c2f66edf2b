"""Per-tenant quotas through a real server with static tokens: concurrent active jobs and stored bytes,
the server's defaults and a tokens-file entry's own, refused with QUOTA_EXCEEDED naming quota and usage;
the byte count is one object two servers on the same storage share."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

import prunekit
from prunekit.v1 import job_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.jobs.durable.usage import TenantUsage
from prunekit_server.jobs.worker.faults import FAULT_LABEL
from prunekit_server.server import RunningServer, start_server

from .conftest import TEST_SETTINGS

TOKEN_A = "team-a-quota-token-0123456789"
TOKEN_B = "team-b-quota-token-0123456789"
QUICK = {"prune": {"method": "unstructured", "ratio": 0.5}, "benchmark": {"warmup": 1, "iterations": 3}}
HANG = {FAULT_LABEL: "hang@ingest"}


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[list[RunningServer]]:
    root = tmp_path_factory.mktemp("quotas")
    entries = [
        {
            "sha256": _digest(TOKEN_A),
            "tenant": "team-a",
            "quota_active_jobs": 1,
            "quota_stored_bytes": _room(models),
        },
        {"sha256": _digest(TOKEN_B), "tenant": "team-b"},
    ]
    tokens = root / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": entries}))
    settings = replace(
        TEST_SETTINGS,
        storage=f"file://{root / 'store'}",
        auth="required",
        auth_tokens_file=str(tokens),
        quota_active_jobs=2,
        quota_stored_bytes=1 << 30,
        warm_workers=False,
    )
    running = [
        start_server(replace(settings, scratch_dir=str(root / f"scratch-{i}"), server_id=f"quota-{i}"))
        for i in range(2)
    ]
    yield running
    for server in running:
        server.stop(grace=1.0)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _room(models: dict[str, Path]) -> int:
    """Team A's byte quota: the MLP fits, the MLP and the CNN do not."""
    return models["mlp.onnx"].stat().st_size + models["cnn.onnx"].stat().st_size // 2


def _client(server: RunningServer, token: str) -> prunekit.Client:
    return prunekit.Client(server.target, token=token, timeout=30, retries=0, ca_file="")


def _refused(call: Callable[[], Any]) -> prunekit.PrunekitError:
    with pytest.raises(prunekit.PrunekitError) as caught:
        call()
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    return caught.value


def test_active_jobs_are_capped_per_tenant(servers: list[RunningServer], models: dict[str, Path]) -> None:
    with _client(servers[0], TOKEN_A) as a, _client(servers[1], TOKEN_B) as b:
        model_a, model_b = a.upload_model(models["mlp.onnx"]), b.upload_model(models["mlp.onnx"])
        first = a.create_job(model_a, QUICK, labels=HANG, request_id="a-first")
        assert a.create_job(model_a, QUICK, labels=HANG, request_id="a-first").id == first.id
        error = _refused(lambda: a.create_job(model_a, QUICK, request_id="a-second"))
        assert error.metadata == {"quota": "active_jobs", "limit": "1", "usage": "1"}
        held = [b.create_job(model_b, QUICK, labels=HANG) for _ in range(2)]
        assert _refused(lambda: b.create_job(model_b, QUICK)).metadata["limit"] == "2"
        a.cancel_job(first.id)
        second = a.create_job(model_a, QUICK, request_id="a-second")
        assert a.wait(second.id).state == job_pb2.JOB_STATE_SUCCEEDED
        for job in held:
            b.cancel_job(job.id)


def test_creates_racing_on_two_servers_never_pass_the_active_jobs_quota(
    servers: list[RunningServer], models: dict[str, Path]
) -> None:
    clients = [_client(server, TOKEN_B) for server in servers]
    model = clients[0].upload_model(models["mlp.onnx"])
    created: list[str] = []
    refused: list[str] = []

    def create(client: prunekit.Client) -> None:
        try:
            created.append(client.create_job(model, QUICK, labels=HANG).id)
        except prunekit.PrunekitError as exc:
            refused.append(exc.reason)

    threads = [threading.Thread(target=create, args=(c,)) for c in clients for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert (len(created), refused) == (2, ["QUOTA_EXCEEDED"] * 6)
    finally:
        for job_id in created:
            clients[0].cancel_job(job_id)
        for client in clients:
            client.close()


def test_stored_bytes_are_counted_once_across_servers(
    servers: list[RunningServer], models: dict[str, Path]
) -> None:
    usage = TenantUsage(servers[0].tenants.store, "team-a")
    room = _room(models)
    with _client(servers[0], TOKEN_A) as a, _client(servers[1], TOKEN_A) as other:
        before = usage.stored_bytes()
        a.upload_model(models["mlp.onnx"])
        assert usage.stored_bytes() == before, "deduplicated: counted once"
        error = _refused(lambda: other.upload_model(models["cnn.onnx"]))
        assert error.metadata["quota"] == "stored_bytes"
        assert error.metadata["limit"] == str(room)
        assert int(error.metadata["usage"]) == usage.stored_bytes() >= models["mlp.onnx"].stat().st_size
        assert error.metadata["requested"] == str(models["cnn.onnx"].stat().st_size)
        shard = {"input": np.zeros((400, 64), np.float32), "label": np.arange(400) % 10}
        _refused(lambda: a.upload_dataset(shard))
    keys = servers[0].tenants.store.list_keys("tenants/team-a/models/")
    assert all(models["cnn.onnx"].name not in key for key in keys)
    assert len({key.split("/")[3] for key in keys}) == 1


def test_concurrent_reservations_on_two_servers_never_pass_the_limit(servers: list[RunningServer]) -> None:
    counters = [TenantUsage(server.tenants.store, "team-race") for server in servers]
    granted: list[int] = []
    refused: list[int] = []

    def reserve(counter: TenantUsage) -> None:
        for _ in range(10):
            try:
                counter.add(7, limit=100)
                granted.append(7)
            except ServiceError:
                refused.append(7)

    threads = [threading.Thread(target=reserve, args=(c,)) for c in counters for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert counters[0].stored_bytes() == sum(granted) == 98
    assert len(granted) + len(refused) == 40
    assert counters[1].add(-98) == 0
