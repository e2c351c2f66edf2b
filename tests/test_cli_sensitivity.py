"""``prunekit analyze --sensitivity`` in a subprocess against a real ``prunekit-server`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.samples import write_sample_model

from .service.server_process import ServerProcess, server_process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(f"file://{tmp_path_factory.mktemp('store')}") as running:
        yield running


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRUNEKIT_SERVER": server.target}
    return subprocess.run(
        [sys.executable, "-m", "prunekit", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_analyze_sensitivity_prints_a_table(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "cnn.onnx"
    write_sample_model(model, "onnx", "cnn", width=8, image_size=16)
    shown = cli(server, "analyze", str(model), "--sensitivity-ratios", "0.25,0.5")
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("Sensitivity: cosine similarity (top-1 agreement)", 1)[1]
    header = table.splitlines()[1].split()
    assert header == ["layer", "channels", "0.25", "0.5"]
    rows = [line for line in table.splitlines() if line.startswith("/layer")]
    assert len(rows) == 6
    assert all(line.count("(") == 2 for line in rows)  # cosine (top-1) at each ratio
    assert "SENSITIVITY_SYNTHETIC" in shown.stdout
    layer_table = shown.stdout.split("Sensitivity:", 1)[0]
    assert all(line.split()[0] in layer_table for line in rows)  # the layer table's names

    bad = cli(server, "analyze", str(model), "--sensitivity-ratios", "0.5,2")
    assert bad.returncode == 2
    assert "0 < ratio < 1" in bad.stderr
