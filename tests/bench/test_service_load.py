"""bench/service_load.py for a few seconds: clients reading jobs while jobs run, through a real server."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.samples import write_sample_model

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    """The bench module, importable by name (its client processes are spawned and import it again)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("service_load")


def test_clients_and_jobs_together_see_no_error(load: ModuleType, tmp_path: Path) -> None:
    model = tmp_path / "mlp.onnx"
    write_sample_model(model, "onnx", "mlp")
    with load.server_process(tmp_path / "store", "--workers", "2") as target:
        tally = load.run(target, model, clients=8, processes=2, seconds=4.0, jobs=3)
    print(load.report(tally, 4.0))
    assert {method: errors for method, errors in tally.errors.items() if errors} == {}
    assert all(tally.latencies[method] for method in load.METHODS)
