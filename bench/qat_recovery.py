"""Post-training INT8 against quantization-aware recovery on a task where INT8 costs accuracy.

The task: the digits (``scripts/digits.py``) with a narrow CNN (4-8-8 channels, 300 steps), whose
thin layers leave INT8 little headroom. Static INT8 (ONNX Runtime, QDQ, minmax on 64 train samples) of
the float model gives the PTQ variant; ``aware_training`` (``--steps`` of fake-quantized fine-tuning,
distilled from the float model) then the same static quantization gives the QAT variant. Printed:
eval-split top-1 of float, PTQ and QAT, the share of PTQ's loss QAT recovers, and the ONNX Runtime CPU
p50 (1 thread, batch 1, the models timed in turn).

Usage: ``python bench/qat_recovery.py [--steps 300] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from scripts.digits import INPUT_NAME, INPUTS, digits_split, export_onnx, train_digits_cnn  # noqa: E402

from prunekit.spec.quantize_configs import AwareTrainingConfig, StaticInt8Config  # noqa: E402
from prunekit_server.quantization import QuantizeContext, quantize  # noqa: E402
from prunekit_server.training.aware import aware_training  # noqa: E402


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, held_out = digits_split()
    work = Path(tempfile.mkdtemp())
    model = export_onnx(
        train_digits_cnn(epochs=0, steps=300, seed=args.seed, c1=4, c2=8, c3=8), work / "f.onnx"
    )
    images = np.asarray(train.inputs[0], dtype=np.float32)
    calibration = [{INPUT_NAME: images[i : i + 1]} for i in range(64)]
    context = QuantizeContext(work, calibration, "")
    ptq = quantize(model, work / "ptq.onnx", StaticInt8Config(), context).path
    start = time.perf_counter()
    config = AwareTrainingConfig(steps=args.steps, lr=1e-4)
    trained = aware_training(onnx.load(str(model)), INPUTS, train, held_out, config, calibration)
    seconds = time.perf_counter() - start
    onnx.save(trained, str(work / "qat_float.onnx"))
    qat = quantize(work / "qat_float.onnx", work / "qat.onnx", StaticInt8Config(), context).path
    x, labels = np.asarray(held_out.inputs[0], dtype=np.float32), held_out.label
    sessions = {"float": _session(model), "ptq_int8": _session(ptq), "qat_int8": _session(qat)}
    top1 = {
        k: float((s.run(None, {INPUT_NAME: x})[0].argmax(1) == labels).mean()) for k, s in sessions.items()
    }
    times: dict[str, list[float]] = {k: [] for k in sessions}
    one = x[:1]
    for _ in range(300):
        for key, session in sessions.items():
            tick = time.perf_counter()
            session.run(None, {INPUT_NAME: one})
            times[key].append((time.perf_counter() - tick) * 1000)
    loss = top1["float"] - top1["ptq_int8"]
    recovered = (top1["qat_int8"] - top1["ptq_int8"]) / loss if loss > 0 else float("nan")
    print(f"{'variant':9} {'top1':>6} {'p50 ms':>7}")
    for key in sessions:
        print(f"{key:9} {top1[key]:6.3f} {np.median(times[key]):7.3f}")
    budget = f"{args.steps} steps, {seconds:.0f} s"
    print(f"PTQ loses {loss * 100:.1f} points; QAT ({budget}) recovers {recovered:.0%}")


if __name__ == "__main__":
    main()
