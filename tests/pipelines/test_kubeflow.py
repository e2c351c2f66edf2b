"""The Kubeflow Pipelines component and example pipeline, compiled by the real ``kfp`` compiler in a
virtual environment of its own (kfp needs protobuf < 7, prunekit's generated code >= 7.35: kfp is never
one of prunekit's dependencies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "pipelines" / "kubeflow" / "example_pipeline.py"
KFP = "kfp==2.17.3"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # installing kfp takes minutes


@pytest.fixture(scope="session")
def kfp_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtual environment with kfp installed from the package index."""
    venv = tmp_path_factory.mktemp("kfp-venv")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", KFP],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def _executor(compiled: dict[str, Any]) -> dict[str, Any]:
    executors = compiled["deploymentSpec"]["executors"]
    (name,) = [n for n in executors if "container" in executors[n] and "prunekit" in n]
    return dict(executors[name]["container"])


def test_the_example_pipeline_compiles_with_the_real_kfp_compiler(kfp_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    done = subprocess.run(
        [str(kfp_python), str(EXAMPLE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = yaml.safe_load(out.read_text())
    assert compiled["pipelineInfo"]["name"] == "prunekit-optimize"
    parameters = compiled["root"]["inputDefinitions"]["parameters"]
    assert parameters["fail_on"]["defaultValue"] == "quality,accuracy"
    assert set(parameters) == {"model_uri", "spec_uri", "server", "fail_on"}
    container = _executor(compiled)
    assert container["image"] == "prunekit:latest"
    assert container["command"][:2] == ["sh", "-c"]
    assert 'prunekit "$@"' in container["command"][2]
    args = container["args"]
    assert "{{$.inputs.artifacts['model'].path}}" in args
    assert "{{$.inputs.artifacts['spec'].path}}" in args
    assert "{{$.outputs.artifacts['report'].path}}" in args
    assert "{{$.outputs.artifacts['artifacts'].path}}" in args
    tasks = compiled["root"]["dag"]["tasks"]
    importers = [t for t in tasks.values() if t["componentRef"]["name"].startswith("comp-importer")]
    assert len(importers) == 2
    versions = subprocess.run(
        [str(kfp_python), "-c", "import google.protobuf as p; print(p.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(versions.stdout.split(".")[0]) < 7, "kfp's protobuf"
