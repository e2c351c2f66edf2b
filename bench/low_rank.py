"""Half the MACs two ways: LOW_RANK (truncated SVD) against CHANNEL pruning, no fine-tuning.

Models (seeded random weights, the zoo's): ``mlp`` (Linear chain), ``transformer`` (its FFN and
projections are MatMuls), ``resnet18`` (width 16, 32x32 images). Each is asked for
``target_macs_reduction: 2`` by both methods (output layers left alone by both). Printed per row: the
MACs reduction reached (the model analysis' counter), the fidelity against the dense model on 16
held-out synthetic inputs (cosine similarity of the outputs, top-1 agreement), parameters, and the
ONNX Runtime CPU latency (1 thread, the three models timed in turn, median of ``--runs``). These
models are tiny: per-node overhead dominates their latency; ``--large`` adds ResNet-18 at 224x224.

Then the same on a trained model, the digits CNN (``scripts/digits.py``): eval-split top-1 of each
half-MACs model as pruned and after the same fine-tuning budget (``--steps`` of AdamW distilled from
the dense model on the train split).

Usage: ``python bench/low_rank.py [--runs 200] [--json]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from scripts.digits import INPUTS, digits_split, export_onnx, train_digits_cnn  # noqa: E402
from tests.zoo import ZOO, ZooEntry, export, resnet18  # noqa: E402

from prunekit.spec.low_rank_configs import LowRankConfig  # noqa: E402
from prunekit.spec.structured_configs import ChannelConfig  # noqa: E402
from prunekit_server.errors import ServiceError  # noqa: E402
from prunekit_server.measure.analysis import count_parameters, layer_table  # noqa: E402
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx  # noqa: E402
from prunekit_server.modelio.torchscript import random_input  # noqa: E402
from prunekit_server.pruning import PruneContext, prune  # noqa: E402
from prunekit_server.training.finetune import FinetuneConfig, finetune  # noqa: E402

MODELS = ("mlp", "transformer", "resnet18")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _outputs(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.stack([np.asarray(session.run(None, feed)[0]) for feed in feeds])


def _latencies(
    sessions: dict[str, ort.InferenceSession], feed: dict[str, np.ndarray], runs: int
) -> dict[str, float]:
    """Median milliseconds per model, the models run in turn so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(10):
        for session in sessions.values():
            session.run(None, feed)
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(t)) for name, t in times.items()}


def _macs(model: onnx.ModelProto, entry: ZooEntry) -> int:
    return sum(int(layer.macs) for layer in layer_table(model, list(entry.inputs)))


def rows_for(name: str, runs: int) -> list[dict[str, Any]]:
    entry = ZOO[name] if name in ZOO else resnet18(224, 64)
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / f"{name}.onnx"
    export(entry.build(), entry, path, "legacy", 17)
    model = onnx.load(str(path))
    generator = torch.Generator().manual_seed(0)
    feeds = [{s.name: random_input(s, generator).numpy() for s in entry.inputs} for _ in range(16)]
    context = PruneContext(inputs=tuple(entry.inputs), feeds=tuple(feeds[:4]))
    variants: dict[str, onnx.ModelProto] = {"dense": model}
    notes: dict[str, str] = {}
    for method, config in (
        ("low_rank", LowRankConfig(target_macs_reduction=2.0)),
        ("channel", ChannelConfig(target_macs_reduction=2.0, round_to=1)),
    ):
        try:
            result = prune(model, config, context)
        except ServiceError as exc:
            notes[method] = exc.message[:80]
            continue
        variants[method] = result.model if result.model is not None else model
        notes[method] = "; ".join(w.split(":")[0] for w in result.warnings)
    sessions = {key: _session(m) for key, m in variants.items()}
    latency = _latencies(sessions, feeds[0], runs)
    dense_out = _outputs(sessions["dense"], feeds)
    base_macs = _macs(model, entry)
    rows = []
    for key, variant in variants.items():
        out = _outputs(sessions[key], feeds)
        cosine = float((dense_out * out).sum() / (np.linalg.norm(dense_out) * np.linalg.norm(out)))
        flat_d, flat_o = dense_out.reshape(-1, dense_out.shape[-1]), out.reshape(-1, out.shape[-1])
        agreement = float((flat_d.argmax(1) == flat_o.argmax(1)).mean())
        row = dict(model=name, method=key, macs_reduction=base_macs / _macs(variant, entry), cosine=cosine)
        row |= dict(top1_agreement=agreement, parameters=count_parameters(variant)[0], p50_ms=latency[key])
        rows.append(row | {"notes": notes.get(key, "")})
    return rows


def _top1(module: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        return float((module.cpu().eval()(torch.from_numpy(images)).argmax(1).numpy() == labels).mean())


def digits_rows(steps: int) -> list[dict[str, Any]]:
    """Top-1 of the half-MACs digits CNN by each method, as pruned and after ``steps`` of fine-tuning."""
    train, held_out = digits_split()
    model = onnx.load(
        str(export_onnx(train_digits_cnn(epochs=0, steps=400), Path(tempfile.mkdtemp()) / "d.onnx"))
    )
    images, labels = np.asarray(held_out.inputs[0], dtype=np.float32), np.asarray(held_out.label)
    feeds = tuple({"image": np.asarray(train.inputs[0][i : i + 1], dtype=np.float32)} for i in range(16))
    context = PruneContext(inputs=INPUTS, feeds=feeds, synthetic=False)
    dense = onnx_to_fx(model, inputs=list(INPUTS))
    rows = [dict(model="digits", method="dense", top1=_top1(dense, images, labels), tuned=float("nan"))]
    for method, config in (
        ("low_rank", LowRankConfig(target_macs_reduction=2.0)),
        ("channel", ChannelConfig(target_macs_reduction=2.0, round_to=1)),
    ):
        result = prune(model, config, context)
        student = result.module
        pruned = _top1(student, images, labels)
        plan = FinetuneConfig(epochs=0, steps=steps, lr=1e-3, device="cpu", seed=0)
        finetune(student, copy.deepcopy(dense), train, held_out, plan)
        rows.append(dict(model="digits", method=method, top1=pruned, tuned=_top1(student, images, labels)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps on the digits")
    parser.add_argument("--large", action="store_true", help="also ResNet-18 at 224x224, width 64")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [*MODELS, "resnet18-224"] if args.large else list(MODELS)
    rows = [row for name in names for row in rows_for(name, args.runs)]
    tuned = digits_rows(args.steps)
    if args.json:
        print(json.dumps(rows + tuned, indent=1))
        return
    print(
        f"{'model':12} {'method':9} {'MACs/':>6} {'cosine':>7} {'top1agr':>7} "
        f"{'params':>8} {'p50 ms':>7}  notes"
    )
    for r in rows:
        print(
            f"{r['model']:12} {r['method']:9} {r['macs_reduction']:6.2f} {r['cosine']:7.4f} "
            f"{r['top1_agreement']:7.3f} {r['parameters']:8d} {r['p50_ms']:7.3f}  {r['notes']}"
        )
    print(f"\ndigits, half the MACs: top-1 as pruned and after {args.steps} fine-tuning steps")
    for r in tuned:
        print(f"{r['method']:9} {r['top1']:6.3f} {r['tuned']:6.3f}")


if __name__ == "__main__":
    main()
