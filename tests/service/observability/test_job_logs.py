"""A real server process logging JSON: every line is an object, and a job's lines name the job."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from tests.samples import write_sample_model
from tests.service.api.conftest import upload
from tests.service.api.jobflow import run
from tests.service.server_process import server_process


def test_json_lines_name_the_job_its_tenant_request_and_attempt(tmp_path: Path) -> None:
    model_path = tmp_path / "mlp.onnx"
    write_sample_model(model_path, "onnx", "mlp")
    log = tmp_path / "server.log"
    env = {"PRUNEKIT_LOG_FORMAT": "json", "PRUNEKIT_LOG_LEVEL": "debug", "PRUNEKIT_WORKERS": "1"}
    with server_process(f"file://{tmp_path / 'store'}", extra_env=env, log=log) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.OptimizerServiceStub(channel)
            job = run(stub, upload(stub, model_path), request_id="req-42")
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED
        made = job.report.provenance  # the server told the worker which job and model it ran
        assert (made.job_id, made.model_filename, made.attempt) == (job.id, "mlp.onnx", 1)
        assert made.model_sha256 == job.model.sha256
        assert server.terminate() == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if line.get("job_id") == job.id]
    assert about
    assert all(line["tenant"] == "default" and line["request_id"] == "req-42" for line in about)
    assert any(line.get("attempt") == "1" for line in about)
    stages = [line for line in lines if "stage benchmark" in line["message"]]
    assert stages
    assert all(line.get("job_id") == job.id and line.get("attempt") == "1" for line in stages)
    assert [line for line in lines if "ended SUCCEEDED" in line["message"]] == [
        line for line in about if "ended SUCCEEDED" in line["message"]
    ]
    calls = [line for line in lines if line.get("method") == "OptimizerService/CreateJob"]
    assert calls
    assert all(line["tenant"] == "default" and line["request_id"] for line in calls)
