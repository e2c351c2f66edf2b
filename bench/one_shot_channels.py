"""One-shot structured pruning without fine-tuning: magnitude vs WANDA-channel vs SPARSEGPT-structured.

Each model loses 30 % and 50 % of its eligible channels (``round_to`` 1, global ranking, no training
afterwards), ranked by l1 or l2 (weight norms), ``wanda`` (``|w| x ||x||`` at the layers that read the
channel) or ``sparsegpt`` (the OBS cost of the channel at those layers, which are then refitted by
least squares on the kept channels):

- ``resnet`` (the zoo's ResNet-like CNN, CHANNEL), ``resnet18`` (the zoo's ResNet-18, width 16,
  32 x 32 inputs, CHANNEL), ``mlp`` (the zoo's MLP, CHANNEL) and ``bert`` (the
  zoo's BERT-like encoder, NEURON: its feed-forward hidden units), seeded random weights: fidelity
  against the dense model (cosine similarity of the outputs, top-1 agreement) on held-out synthetic
  inputs, calibration on other synthetic inputs;
- the digits CNN (``scripts/digits.py``, trained briefly; CHANNEL): top-1 accuracy on the eval split,
  calibration on the first samples of the train split.

Printed per row: the metrics, and the seconds and peak resident-memory growth of the whole pruning
call (group search, calibration pass, refit, export). The growth is of the process's peak, so a row
after a larger one can show 0. Usage: ``python bench/one_shot_channels.py [--calibration 128] [--json]``.
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
from bench.one_shot import metric_cells, zoo_case  # noqa: E402
from scripts.digits import INPUT_NAME, digits_split, export_onnx, train_digits_cnn  # noqa: E402

from prunekit.spec.structured_configs import ChannelConfig, NeuronConfig, StructuredConfig  # noqa: E402
from prunekit.v1 import model_pb2  # noqa: E402
from prunekit_server.pruning import PruneContext, prune  # noqa: E402

CRITERIA = ("l1", "l2", "wanda", "sparsegpt")
RATIOS = (0.3, 0.5)
MODELS = {"resnet": ChannelConfig, "resnet18": ChannelConfig, "mlp": ChannelConfig, "bert": NeuronConfig}


def outputs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([np.asarray(session.run(None, feed)[0]).reshape(-1, 1) for feed in feeds])


def timed_prune(
    model: onnx.ModelProto, config: StructuredConfig, context: PruneContext
) -> tuple[onnx.ModelProto, float, float, list[str]]:
    """The pruned model, seconds and peak RSS growth (MiB) of the call, and its warnings."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = prune(model, config, context)
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.model is not None
    return result.model, seconds, grown, result.warnings


def _fidelity(dense: np.ndarray, out: np.ndarray, classes: int) -> tuple[float, float]:
    cosine = float((dense * out).sum() / (np.linalg.norm(dense) * np.linalg.norm(out)))
    top1 = float((dense.reshape(-1, classes).argmax(1) == out.reshape(-1, classes).argmax(1)).mean())
    return cosine, top1


def fidelity_rows(name: str, calibration: int) -> list[dict[str, Any]]:
    model, context, test = zoo_case(name, calibration)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    classes = int(np.asarray(session.run(None, test[0])[0]).shape[-1])
    dense = outputs(model, test)
    rows = []
    for ratio in RATIOS:
        for criterion in CRITERIA:
            config = MODELS[name](ratio=ratio, importance=criterion, round_to=1)
            pruned, seconds, grown, warnings = timed_prune(model, config, context)
            cosine, top1 = _fidelity(dense, outputs(pruned, test), classes)
            row = dict(model=name, ratio=ratio, criterion=criterion, cosine=cosine, top1_agreement=top1)
            skipped = sum(w.startswith("RECONSTRUCTION_SKIPPED") for w in warnings)
            rows.append({**row, "seconds": seconds, "rss_mib": grown, "refit_skipped": skipped})
    return rows


def _accuracy(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray, batch: int) -> float:
    """Top-1 on ``images`` in batches of ``batch`` (the last one padded)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    padded = np.concatenate([images, np.zeros((-len(images) % batch, *images.shape[1:]), images.dtype)])
    logits = [session.run(None, {INPUT_NAME: padded[i : i + batch]})[0] for i in range(0, len(padded), batch)]
    return float((np.concatenate(logits)[: len(images)].argmax(1) == labels).mean())


def digits_rows(calibration: int) -> list[dict[str, Any]]:
    train, held_out = digits_split()
    torch.manual_seed(0)
    cnn = train_digits_cnn(epochs=0, steps=400)
    model = onnx.load(str(export_onnx(cnn, Path(tempfile.mkdtemp()) / "digits.onnx")))
    batch = 32
    inputs = (model_pb2.InputSpec(name=INPUT_NAME, shape=[batch, 1, 8, 8]),)
    images = np.asarray(train.inputs[0], dtype=np.float32)[: calibration - calibration % batch]
    calib = [{INPUT_NAME: images[i : i + batch]} for i in range(0, len(images), batch)]
    test_x = np.asarray(held_out.inputs[0], dtype=np.float32)
    labels = np.asarray(held_out.label)
    context = PruneContext(inputs=inputs, feeds=tuple(calib), synthetic=False)
    dense = _accuracy(model, test_x, labels, batch)
    rows = [dict(model="digits", ratio=0.0, criterion="dense", accuracy=dense, seconds=0.0, rss_mib=0.0)]
    for ratio in RATIOS:
        for criterion in CRITERIA:
            config = ChannelConfig(ratio=ratio, importance=criterion, round_to=1)
            pruned, seconds, grown, _ = timed_prune(model, config, context)
            accuracy = _accuracy(pruned, test_x, labels, batch)
            row = dict(model="digits", ratio=ratio, criterion=criterion, accuracy=accuracy)
            rows.append({**row, "seconds": seconds, "rss_mib": grown})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=128, help="calibration samples")
    parser.add_argument("--models", default="resnet,resnet18,mlp,bert,digits")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        rows += digits_rows(args.calibration) if name == "digits" else fidelity_rows(name, args.calibration)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    header = ("model", "ratio", "criterion", "cosine", "top1agr", "acc", "s", "MiB")
    print("{:7} {:>5} {:10} {:>7} {:>7} {:>6} {:>6} {:>5}".format(*header))
    for r in rows:
        print(f"{r['model']:7} {r['ratio']:5.2f} {r['criterion']:10} {metric_cells(r)}")


if __name__ == "__main__":
    main()
