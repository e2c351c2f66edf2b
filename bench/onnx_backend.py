"""ONNX's backend test models (pytorch-converted, pytorch-operator, simple, light) through prunekit's
converter: how many convert and match their expected outputs, how many are wrong, how many are
refused and why. ``python bench/onnx_backend.py``."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.modelio.onnx_to_fx.onnx_backend import run_all


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    started = time.monotonic()
    counts = run_all()
    print(counts.summary())
    for name, detail in sorted(counts.wrong.items()):
        print(f"WRONG {name}: {detail}")
    for name, reason in sorted(counts.refused.items(), key=lambda item: item[1]):
        print(f"refused {name}: {reason}")
    print(f"{time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
