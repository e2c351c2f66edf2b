"""The S3 endpoint stops while a job stages its inputs, publishes its results or uploads a checkpoint,
and comes back on the same port within the retry budget: every job SUCCEEDS, published once, without
a worker start charged for the outage; the server answers throughout; a client dropping an upload
half way leaves nothing behind.

The endpoint is a real moto_server behind :class:`.s3_proxy.S3Proxy`, which refuses connections
while "down" (moto keeps its buckets).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb

from ..service.api.conftest import upload, upload_requests
from ..service.api.jobflow import create
from ..service.jobs.execution.finetune_flow import finetune_spec, upload_inputs
from .conftest import assert_job_gone_from, assert_published_once, stores_of
from .harness import OUTAGE_S, Faulty, Prober, faulty_server, poll_job, wait_for
from .s3_proxy import S3Proxy

LEASE_S = 3 * OUTAGE_S + 30
"""Longer than any outage here, so the server keeps its jobs (outages beyond the lease: test_lease_lost)."""
MODEL_GET = r"^GET \S*/models/[0-9a-f]{64}/model$"
ARTIFACT_PUT = r"^PUT \S*/attempts/1/"
CHECKPOINT_PUT = r"^PUT \S*/checkpoints/finetune/ckpt-"


@pytest.fixture(scope="module")
def server(proxy: S3Proxy, storage: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    env = {"AWS_ENDPOINT_URL": proxy.url, "PRUNEKIT_LEASE_S": str(LEASE_S), "PRUNEKIT_MAX_ATTEMPTS": "1"}
    with faulty_server(storage, tmp_path_factory.mktemp("s3-outages"), env) as running:
        yield running


def _outage_during(
    server: Faulty, proxy: S3Proxy, storage: str, pattern: str, start: Callable[[], job_pb2.Job]
) -> job_pb2.Job:
    """Arm the outage at ``pattern``, start the job, wait for its end while probing the server."""
    lines, tracebacks = server.outage_lines(), server.log_text().count("Traceback")
    proxy.down_on(pattern, OUTAGE_S)
    job = start()
    with Prober(server.process.target, job.id) as probe:
        done = poll_job(server.stub, job.id)
    outage = proxy.wait_outage_over(OUTAGE_S + 30)
    assert outage.up is not None
    assert outage.up - outage.down >= OUTAGE_S
    print(f"{pattern}: outage {outage.up - outage.down:.1f} s at {outage.trigger!r}; {probe.check()}")
    assert_published_once(stores_of(storage), done)
    assert done.charged_attempts == 1, "the outage was charged against max_attempts"
    assert_job_gone_from(server, job.id)
    assert server.outage_lines() - lines == 1, "one log line per outage"
    assert server.log_text().count("Traceback") == tracebacks
    return done


def test_an_outage_while_staging_the_model_is_waited_out(
    server: Faulty, proxy: S3Proxy, storage: str, fault_models: dict[str, Path]
) -> None:
    model = upload(server.stub, fault_models["mlp.onnx"])
    done = _outage_during(server, proxy, storage, MODEL_GET, lambda: create(server.stub, model))
    assert done.attempt == 1


def test_an_outage_while_publishing_is_waited_out_and_publishes_once(
    server: Faulty, proxy: S3Proxy, storage: str, fault_models: dict[str, Path]
) -> None:
    model = upload(server.stub, fault_models["mlp.onnx"])
    done = _outage_during(server, proxy, storage, ARTIFACT_PUT, lambda: create(server.stub, model))
    assert done.attempt == 1


def test_an_outage_mid_fine_tune_does_not_spend_an_attempt(
    server: Faulty, proxy: S3Proxy, storage: str, tmp_path: Path
) -> None:
    """Issue 11: with max_attempts 1, a fine-tune through an outage at its first checkpoint upload
    succeeds with its one worker start (an outage beyond the lease: test_lease_lost)."""
    model, train = upload_inputs(server.stub, tmp_path)
    spec = finetune_spec(train, steps=200, every=20)
    done = _outage_during(server, proxy, storage, CHECKPOINT_PUT, lambda: create(server.stub, model, spec))
    assert done.report.finetune.runs[-1].steps == 200
    assert done.attempt == 1


def test_a_client_dropping_mid_upload_leaves_nothing(
    server: Faulty, storage: str, fault_models: dict[str, Path]
) -> None:
    """The spool of an S3-backed server is its scratch directory: the half-received file goes."""
    data = fault_models["wide.onnx"].read_bytes()
    half = len(data) // 2
    released = threading.Event()

    def half_then_stall() -> Iterator[pb.UploadModelRequest]:
        sent = 0
        for request in upload_requests(data, chunk=256 << 10):
            if sent >= half:
                released.wait(60)  # the call is cancelled meanwhile
                return
            sent += len(request.chunk)
            yield request

    call = server.stub.UploadModel.future(half_then_stall(), timeout=60)
    spooled = wait_for(
        lambda: [p for p in server.scratch.rglob("prunekit-upload-*") if p.stat().st_size >= half]
    )
    assert spooled, "the first half never reached the server's spool"
    assert call.cancel()
    released.set()
    with pytest.raises(grpc.FutureCancelledError):
        call.result()
    assert wait_for(lambda: not list(server.scratch.rglob("prunekit-upload-*"))), "the spool file is left"
    sha256 = hashlib.sha256(data).hexdigest()
    assert stores_of(storage).store.list_keys(f"tenants/default/models/{sha256}") == []
    assert upload(server.stub, fault_models["mlp.onnx"]).size_bytes > 0, "the server stopped serving"
