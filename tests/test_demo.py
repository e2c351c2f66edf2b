"""`make demo`'s script end to end: train, serve, upload, prune, fine-tune, report (the README's command)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def test_the_demo_recovers_speeds_up_and_checks_the_pruned_model_with_onnx_runtime(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PRUNEKIT_DEMO_OUT": str(tmp_path / "out"),
        "PRUNEKIT_STORAGE": str(tmp_path / "data"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    original = re.search(r"original\s+(\d+\.\d+) %", output)
    untuned = re.search(r"pruned, not fine-tuned\s+(\d+\.\d+) %\s+[\d,]+ MACs \((0\.\d+)x\)", output)
    tuned = re.search(r"pruned \+ distillation\s+(\d+\.\d+) %", output)
    checked = re.search(r"checked here with ONNX Runtime: \S+ top-1 (\d+\.\d+) %", output)
    assert original is not None, output[-4000:]
    assert untuned is not None
    assert tuned is not None
    assert checked is not None
    assert float(original.group(1)) > 95.0
    assert float(untuned.group(2)) <= 0.55, "the demo prunes to about half the MACs"
    assert float(untuned.group(1)) <= float(tuned.group(1)), "fine-tuning lost accuracy"
    assert float(tuned.group(1)) > float(original.group(1)) - 3.0
    for variant in ("pruned", "pruned_int8"):  # the point of the demo: measurably faster, not slower
        speed = re.search(rf"   {variant} +faster: (\d+\.\d+)x at batch 1, (\d+\.\d+)x at batch 32", output)
        assert speed is not None, output[-4000:]
        assert float(speed.group(2)) > 1.1, f"{variant} is not faster at batch 32: {speed.group(0)}"
    assert checked.group(1) == tuned.group(1), "the downloaded pruned.onnx is not the reported model"
    assert {"pruned.onnx", "report.html", "report.json", "report.md"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
