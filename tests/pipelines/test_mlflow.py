"""The MLflow hook against a real ``mlflow server`` process, in a virtual environment of its own (mlflow's
protobuf range is not prunekit's), logging a real job's downloaded report and files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.pipeline import run_optimization
from tests.samples import write_sample_model

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "pipelines" / "mlflow" / "log_job.py"
MLFLOW = "mlflow==3.17.2"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # installing mlflow takes minutes

_QUERY = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
run = client.get_run(sys.argv[2])
files = [f.path for f in client.list_artifacts(sys.argv[2])]
print(json.dumps({"metrics": run.data.metrics, "tags": run.data.tags, "params": run.data.params,
                  "name": run.info.run_name, "files": files}))
"""


@pytest.fixture(scope="session")
def mlflow_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with mlflow installed from the package index; its bin directory."""
    venv = tmp_path_factory.mktemp("mlflow-venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MLFLOW,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def tracking(mlflow_venv: Path, tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server (sqlite runs, local artifacts) on a free port; its URL."""
    port = _free_port()
    command = [str(mlflow_venv / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(tmp_path / "mlartifacts"), "--workers", "1"]
    log = (tmp_path / "mlflow.log").open("w")
    server = subprocess.Popen(  # its own process group: the server starts job consumers of its own
        command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the MLflow server did not answer"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        time.sleep(1.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """What ``prunekit download`` leaves of a real job: report.json (with provenance) and its files."""
    write_sample_model(tmp_path / "cnn.onnx", "onnx", "cnn", width=8, image_size=16)
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5),
        benchmark=spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.3),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    given = report_pb2.Provenance(job_id="job-mlflow", model_filename="cnn.onnx", model_sha256="ab" * 32)
    result = run_optimization(
        tmp_path / "cnn.onnx",
        model_pb2.MODEL_FORMAT_ONNX,
        spec,
        tmp_path / "work",
        lambda *_: None,
        provenance=given,
    )
    out = tmp_path / "job"
    out.mkdir()
    for name, path in result.artifacts.items():
        shutil.copy(path, out / name)
    report = json_format.MessageToJson(result.report, preserving_proto_field_name=True)
    (out / "report.json").write_text(report)
    return out


def test_a_job_is_logged_to_a_real_tracking_server(mlflow_venv: Path, tracking: str, job_dir: Path) -> None:
    python = str(mlflow_venv / "python")
    command = [python, str(HOOK), str(job_dir), "--tracking-uri", tracking, "--experiment", "prunekit-test"]
    logged = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert logged.returncode == 0, logged.stderr[-3000:]
    run_id = logged.stdout.strip().splitlines()[-1]
    queried = subprocess.run(
        [python, "-c", _QUERY, tracking, run_id], capture_output=True, text=True, timeout=300, check=True
    )
    run = json.loads(queried.stdout.strip().splitlines()[-1])
    report = json.loads((job_dir / "report.json").read_text())
    (pruned,) = report["variants"]
    assert run["name"] == "job-mlflow"
    assert run["tags"]["prunekit.job_id"] == "job-mlflow"
    assert run["tags"]["prunekit.model_sha256"] == "ab" * 32
    assert run["params"]["spec.prune.ratio"] == "0.5"
    assert run["metrics"]["pruned.latency_speedup"] == pytest.approx(pruned["latency_speedup"])
    assert run["metrics"]["pruned.size_bytes"] == float(pruned["stats"]["size_bytes"])
    assert run["metrics"]["baseline.p50_ms"] == pytest.approx(report["baseline"]["latency"]["p50_ms"])
    assert {"report.json", "report.md", "report.html", "pruned.onnx"} <= set(run["files"])
