"""bench/finetune_recovery.py on a tiny budget: Torch-Pruning hits the MACs target, every path runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "finetune_recovery.py"


@pytest.fixture(scope="module")
def recovery() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finetune_recovery", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_torch_pruning_baseline_halves_the_macs_and_fine_tunes(recovery: ModuleType, tmp_path: Path) -> None:
    task = recovery.make_task(0, tmp_path, epochs=2)
    row = recovery.run_torch_pruning(task, "torch-pruning + distill", 20, tmp_path / "tp")
    assert abs(row.macs_ratio - 0.5) <= 0.5 * recovery.MACS_TOLERANCE
    assert row.baseline_top1 > 0.5
    assert 0.1 < row.top1 <= 1.0
    config, distill = recovery.finetune_config("torch-pruning + distill", 20, 0)
    assert distill
    assert (config.steps, config.lr, config.batch_size, config.alpha) == (20, 3e-3, 32, 0.5)
    assert not recovery.finetune_config("torch-pruning + CE", 20, 0)[1]


def test_the_table_compares_the_pipeline_with_the_eager_baseline(recovery: ModuleType) -> None:
    log: list[str] = []
    rows = recovery.bench([0], 10, ["none", "cross-entropy", "torch-pruning + CE"], log.append, epochs=2)
    assert [r.method for r in rows] == ["none", "cross-entropy", "torch-pruning + CE"]
    assert len(log) == 3
    assert {round(r.baseline_top1, 4) for r in rows} == {round(rows[0].baseline_top1, 4)}
    for row in rows:
        assert abs(row.macs_ratio - 0.5) <= 0.5 * recovery.MACS_TOLERANCE
    assert rows[1].top1 > rows[0].top1
    table = recovery.table(rows)
    lines = table.splitlines()
    assert lines[2] == "| method | MACs ratio | top-1 (%) | drop (points) | seconds |"
    assert [line.split(" | ")[0] for line in lines[4:]] == [
        "| unpruned",
        "| none",
        "| cross-entropy",
        "| torch-pruning + CE",
    ]
    assert f"| {100 * rows[1].top1:.2f} | {rows[1].drop_points:.2f} |" in lines[6]
    assert recovery.verdict(rows).startswith("target not checked")
