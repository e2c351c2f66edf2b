"""The pod's file-system contract, run for real: analysis and a job succeed with a read-only root and
only the scratch mount writable (as the image's uid where this machine allows it), and SIGTERM drains
and exits 0 within the pod's grace period."""

from __future__ import annotations

from pathlib import Path

import prunekit
from prunekit.v1 import job_pb2
from tests.deploy.confined import confined_server
from tests.samples import write_sample_model

QUICK_SPEC = {
    "prune": {"method": "unstructured", "ratio": 0.5},
    "benchmark": {"warmup": 1, "iterations": 5},
    "evaluation": {"samples": 4},
}
#: terminationGracePeriodSeconds of deploy/base/deployment.yaml.
POD_GRACE_S = 45


def test_a_job_succeeds_with_only_the_scratch_mount_writable(tmp_path: Path) -> None:
    model = tmp_path / "cnn.onnx"
    write_sample_model(model, "onnx", "cnn", width=8)
    log = tmp_path / "server.log"
    with confined_server({"PRUNEKIT_SHUTDOWN_GRACE_S": "5"}, log) as server:
        with prunekit.Client(server.target, timeout=30) as client:
            analysis = client.analyze(model)
            job = client.optimize(model, QUICK_SPEC)
        assert analysis.layers, log.read_text()
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, log.read_text()
        assert any(v.name == "pruned" for v in job.report.variants)
        assert server.terminate(timeout=POD_GRACE_S) == 0, log.read_text()
    assert "Read-only file system" not in log.read_text()
