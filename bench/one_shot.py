"""One-shot pruning without fine-tuning: magnitude vs WANDA vs SPARSEGPT at the same sparsity.

Three models, each pruned to 50 % unstructured (per layer) and to 2:4, no training afterwards:

- ``bert`` (the zoo's BERT-like encoder) and ``resnet`` (the zoo's ResNet-like CNN), seeded random
  weights: fidelity against the dense model (cosine similarity of the outputs, top-1 agreement) on
  held-out synthetic inputs; calibration on other synthetic inputs;
- the digits CNN (``scripts/digits.py``, trained briefly): top-1 accuracy on the eval split, calibration
  on the first samples of the train split.

Printed per row: the metric, and the seconds and peak resident-memory growth of the pruning call
(calibration pass included). The literature's order is SPARSEGPT >= WANDA > magnitude.

Usage: ``python bench/one_shot.py [--calibration 128] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import resource
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
from scripts.digits import INPUT_NAME, digits_split, export_onnx, train_digits_cnn  # noqa: E402
from tests.zoo import ZOO, export  # noqa: E402

from prunekit.spec.prune_configs import NMConfig, PruneConfig, UnstructuredConfig  # noqa: E402
from prunekit_server.modelio.torchscript import random_input  # noqa: E402
from prunekit_server.pruning import PruneContext, apply_tensors, prune  # noqa: E402

CRITERIA = ("magnitude", "wanda", "sparsegpt")


def configs(criterion: str, ignore: tuple[str, ...] = ()) -> dict[str, PruneConfig]:
    """The two sparsities of the comparison, for one criterion (``ignore``: layers left dense)."""
    return {
        "50%": UnstructuredConfig(ratio=0.5, scope="per_layer", importance=criterion, ignore=ignore),  # type: ignore[arg-type]
        "2:4": NMConfig(importance=criterion, prune_output_layers=True, ignore=ignore),  # type: ignore[arg-type]
    }


def run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [np.asarray(session.run(None, feed)[0]).reshape(len(next(iter(feed.values()))), -1) for feed in feeds]
    )


def timed_prune(
    model: onnx.ModelProto, config: PruneConfig, context: PruneContext
) -> tuple[onnx.ModelProto, float, float]:
    """The pruned model, seconds and peak RSS growth (MiB) of the call."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = prune(model, config, context)
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return apply_tensors(model, result.tensors), seconds, grown


def zoo_case(
    name: str, calibration: int
) -> tuple[onnx.ModelProto, PruneContext, list[dict[str, np.ndarray]]]:
    """The zoo model ``name`` (random weights, seed 0) as legacy ONNX, a context of ``calibration``
    synthetic samples, and 16 held-out synthetic feeds."""
    entry = ZOO[name]
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / f"{name}.onnx"
    export(entry.build(), entry, path, "legacy", 17)
    model = onnx.load(str(path))
    generator = torch.Generator().manual_seed(0)
    batch = int(entry.inputs[0].shape[0])
    calib = [
        {s.name: random_input(s, generator).numpy() for s in entry.inputs}
        for _ in range(max(1, calibration // batch))
    ]
    test = [{s.name: random_input(s, generator).numpy() for s in entry.inputs} for _ in range(16)]
    return model, PruneContext(inputs=tuple(entry.inputs), feeds=tuple(calib), synthetic=True), test


def metric_cells(row: dict[str, Any]) -> str:
    """A row's cosine, top-1 agreement, accuracy ("-" when not measured), seconds and MiB, aligned."""
    cos = f"{row['cosine']:.4f}" if "cosine" in row else "-"
    agr = f"{row['top1_agreement']:.3f}" if "top1_agreement" in row else "-"
    acc = f"{row['accuracy']:.3f}" if "accuracy" in row else "-"
    return f"{cos:>7} {agr:>7} {acc:>6} {row['seconds']:6.2f} {row['rss_mib']:5.0f}"


def fidelity_rows(name: str, calibration: int) -> list[dict[str, Any]]:
    model, context, test = zoo_case(name, calibration)
    dense = run(model, test)
    rows = []
    for criterion in CRITERIA:
        for sparsity, config in configs(criterion).items():
            pruned, seconds, grown = timed_prune(model, config, context)
            out = run(pruned, test)
            dense_rows = dense.reshape(-1, dense.shape[-1])
            out_rows = out.reshape(-1, out.shape[-1])
            cosine = float((dense * out).sum() / (np.linalg.norm(dense) * np.linalg.norm(out)))
            top1 = float((dense_rows.argmax(1) == out_rows.argmax(1)).mean())
            rows.append(
                dict(
                    model=name,
                    sparsity=sparsity,
                    criterion=criterion,
                    cosine=cosine,
                    top1_agreement=top1,
                    seconds=seconds,
                    rss_mib=grown,
                )
            )
    return rows


def digits_rows(calibration: int) -> list[dict[str, Any]]:
    train, held_out = digits_split()
    cnn = train_digits_cnn(epochs=0, steps=400)
    model = onnx.load(str(export_onnx(cnn, Path(tempfile.mkdtemp()) / "digits.onnx")))
    images = np.asarray(train.inputs[0], dtype=np.float32)[:calibration]
    calib = [{INPUT_NAME: images[i : i + 32]} for i in range(0, len(images), 32)]
    test_x = np.asarray(held_out.inputs[0], dtype=np.float32)
    labels = np.asarray(held_out.label)
    context = PruneContext(feeds=tuple(calib), synthetic=False)
    dense = float((run(model, [{INPUT_NAME: test_x}]).argmax(1) == labels).mean())
    rows = [dict(model="digits", sparsity="dense", criterion="-", accuracy=dense, seconds=0.0, rss_mib=0.0)]
    for criterion in CRITERIA:
        for ignore in ((), ("*conv1*",)):
            for sparsity, config in configs(criterion, ignore).items():
                if ignore and sparsity == "2:4":
                    continue  # the stem's single input channel already keeps it dense under 2:4
                pruned, seconds, grown = timed_prune(model, config, context)
                sparsity += ", stem dense" if ignore else ""
                accuracy = float((run(pruned, [{INPUT_NAME: test_x}]).argmax(1) == labels).mean())
                row = dict(sparsity=sparsity, criterion=criterion, accuracy=accuracy, seconds=seconds)
                rows.append({"model": "digits", **row, "rss_mib": grown})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=128, help="calibration samples")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [
        *fidelity_rows("bert", args.calibration),
        *fidelity_rows("resnet", args.calibration),
        *digits_rows(args.calibration),
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"{'model':8} {'sparsity':8} {'criterion':10} {'cosine':>7} {'top1agr':>7} "
        f"{'acc':>6} {'s':>6} {'MiB':>5}"
    )
    for r in rows:
        print(f"{r['model']:8} {r['sparsity']:8} {r['criterion']:10} {metric_cells(r)}")


if __name__ == "__main__":
    main()
