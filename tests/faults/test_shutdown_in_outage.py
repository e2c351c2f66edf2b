"""SIGTERM while jobs wait out a storage failure (their model's GET answers 503): the shutdown stays a
shutdown. The job that does not fine-tune FAILS with SERVER_SHUTTING_DOWN (not STORAGE_UNAVAILABLE);
the fine-tune is released for another server (its lease ended at once), and no worker ran.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc

from prunekit.v1 import job_pb2
from prunekit_server.jobs.durable import lease
from prunekit_server.rpc_status import from_status

from ..service.api.conftest import upload
from ..service.api.jobflow import create
from ..service.jobs.execution.finetune_flow import finetune_spec, upload_inputs
from .conftest import assert_nothing_stored, stores_of
from .harness import faulty_server, wait_for
from .s3_proxy import S3Proxy
from .test_s3_outages import MODEL_GET


def test_a_shutdown_while_staging_waits_out_storage_is_a_shutdown(
    proxy: S3Proxy, storage: str, fault_models: dict[str, Path], tmp_path: Path
) -> None:
    env = {
        "AWS_ENDPOINT_URL": proxy.url,
        "PRUNEKIT_WORKERS": "2",
        "PRUNEKIT_STORAGE_RETRY_S": "300",
        "PRUNEKIT_SHUTDOWN_GRACE_S": "1",
    }
    with faulty_server(storage, tmp_path, env) as server:
        mlp = upload(server.stub, fault_models["mlp.onnx"])
        model, train = upload_inputs(server.stub, tmp_path)
        proxy.fail_requests(MODEL_GET, count=None, status=503)
        try:
            plain = create(server.stub, mlp)
            tuning = create(server.stub, model, finetune_spec(train))
            assert wait_for(lambda: proxy.failed >= 4), "the jobs never met the failing storage"
            started = time.monotonic()
            server.process.proc.send_signal(signal.SIGTERM)
            assert server.process.proc.wait(timeout=60) == 0
            stopped_after = time.monotonic() - started
        finally:
            proxy.heal()
    stores = stores_of(storage)
    failed = stores.jobs.get(plain.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED
    error = from_status(failed.error)
    assert (failed.error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE.value[0], "SERVER_SHUTTING_DOWN")
    assert_nothing_stored(stores, plain.id)
    released = stores.jobs.get(tuning.id)
    assert released.state == job_pb2.JOB_STATE_RUNNING
    assert lease.is_expired(released)
    assert stopped_after < 30, "the shutdown waited out the storage retry budget"
    assert "Traceback" not in server.log_text()
