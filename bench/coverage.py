"""Coverage of the structured methods over every model family the tests carry, in every format.

Models: the test zoo (CNNs, an MLP, hand-written and torch-built transformers,
a detector-free VAD net with a scalar input; legacy ONNX, dynamo ONNX,
TorchScript script and trace) and the Hugging Face fixtures of
``tests/fixtures/transformers`` (BERT, DistilBERT, ViT, Swin, GPT-2, a
LLaMA-style decoder with grouped-query attention and rotary embeddings, a
Qwen2-style one with 4 query heads per key/value head, a Whisper encoder, a T5
encoder; legacy ONNX, dynamo ONNX, TorchScript trace). Each model goes
through the service's intake (TorchScript through the legacy exporter) and the
pruning engine as a job runs it:

* CHANNEL asks for 1.5x fewer MACs (``target_macs_reduction``);
* NEURON 30 % of hidden units, ATTENTION_HEAD 25 % of heads, LAYER 30 % of
  blocks (ratios), N_M 2:4 sparsity (MACs unchanged: N:M is dense in ONNX).

A cell is ``ok`` with the MACs reduction reached (``*`` when a MACs target was
missed by more than 5 %), the fidelity (mean cosine of the first output against
the original's, ONNX Runtime on 4 synthetic batches) and any skipped groups; or
the reason it is not: the service's reason and message (``n/a`` for
UNSUPPORTED_MODEL: nothing this method can prune), the exporter's refusal for a
format it could not write, an output whose shape or dtype changed.

Usage: ``python bench/coverage.py [--models bert,llama_gqa] [--methods CHANNEL,ATTENTION_HEAD]
[--out table.md]``. Not run by the tests.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from prunekit.v1 import model_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure.analysis import analyze
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pruning import (
    ChannelConfig,
    HeadConfig,
    LayerConfig,
    NeuronConfig,
    NMConfig,
    PruneConfig,
    PruneContext,
    prune,
)
from prunekit_server.pruning.base import apply_tensors
from prunekit_server.pruning.fx_tools import fidelity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import zoo_hf
from tests.service.pruning.structured_zoo import load as load_zoo
from tests.service.pruning.structured_zoo import run_ort
from tests.zoo import FORMATS, ZOO

CHANNEL_TARGET = 1.5
METHODS: dict[str, PruneConfig] = {
    "CHANNEL": ChannelConfig(target_macs_reduction=CHANNEL_TARGET),
    "NEURON": NeuronConfig(ratio=0.3),
    "ATTENTION_HEAD": HeadConfig(ratio=0.25),
    "LAYER": LayerConfig(ratio=0.3),
    "N_M": NMConfig(n=2, m=4),
}
Loaded = tuple[onnx.ModelProto, tuple[model_pb2.InputSpec, ...]]


def _zoo(name: str, fmt: str) -> Loaded:
    case = load_zoo(name, fmt)
    return case.model, case.inputs


def models(only: set[str]) -> list[tuple[str, str, Callable[[], Loaded] | str]]:
    """(family, format, loader or the exporter's refusal) for every model."""
    found: list[tuple[str, str, Callable[[], Loaded] | str]] = []
    for name in ZOO:
        if name != "resnet18" and (not only or name in only):
            found += [(name, fmt, lambda n=name, f=fmt: _zoo(n, f)) for fmt in FORMATS]  # type: ignore[misc]
    for name in zoo_hf.INDEX:
        if only and name not in only:
            continue
        for fmt in zoo_hf.FORMATS:
            refused = zoo_hf.refusal(name, fmt)
            found.append(
                (f"hf-{name}", fmt, refused or (lambda n=name, f=fmt: zoo_hf.load(n, f)))  # type: ignore[misc]
            )
    return found


def _macs(model: onnx.ModelProto, inputs: tuple[model_pb2.InputSpec, ...]) -> int:
    onnx_format = model_pb2.MODEL_FORMAT_ONNX
    return analyze(model, list(inputs), source_format=onnx_format, size_bytes=0).macs


def cell(model: onnx.ModelProto, inputs: tuple[model_pb2.InputSpec, ...], config: PruneConfig) -> str:
    """One method on one model: what it reached, or why not."""
    feeds = synthetic_inputs(list(inputs), 4, 3)
    try:
        result = prune(model, config, PruneContext(inputs=inputs, feeds=tuple(feeds), synthetic=True))
    except ServiceError as exc:
        message = " ".join(exc.message.split())[:110]
        return f"n/a: {message}" if exc.reason == "UNSUPPORTED_MODEL" else f"{exc.reason}: {message}"
    pruned_model = result.model if result.model is not None else apply_tensors(model, result.tensors)
    reference = [run_ort(model, feed) for feed in feeds]
    pruned = [run_ort(pruned_model, feed) for feed in feeds]
    for ref, out in zip(reference, pruned, strict=True):
        if out[0].shape != ref[0].shape or out[0].dtype != ref[0].dtype:
            return f"output {out[0].dtype}{list(out[0].shape)}, want {ref[0].dtype}{list(ref[0].shape)}"
    quality = fidelity(
        [[torch.from_numpy(np.asarray(r[0]))] for r in reference],
        [[torch.from_numpy(np.asarray(p[0]))] for p in pruned],
    )
    reached = _macs(model, inputs) / max(1, _macs(pruned_model, inputs))
    missed = isinstance(config, ChannelConfig) and abs(reached - CHANNEL_TARGET) > 0.05 * CHANNEL_TARGET
    note = f"ok {reached:.2f}x{'*' if missed else ''}, cos {quality.cosine_similarity:.3f}"
    skipped = sum(1 for w in result.warnings if w.startswith("GROUP_SKIPPED"))
    return note + (f", {skipped} group(s) skipped" if skipped else "")


def _timed(
    name: str, fmt: str, method: str, model: onnx.ModelProto, inputs: tuple[model_pb2.InputSpec, ...]
) -> str:
    begun = time.monotonic()
    try:
        result = cell(model, inputs, METHODS[method])
    except Exception as exc:  # a bench reports, it does not stop
        result = f"error: {type(exc).__name__}: {str(exc)[:100]}"
    print(f"  {name} {fmt} {method} {time.monotonic() - begun:.1f}s", file=sys.stderr, flush=True)
    return result


def table(only: set[str], methods: list[str]) -> list[str]:
    lines = ["| model | format | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for name, fmt, loader in models(only):
        started = time.monotonic()
        if isinstance(loader, str):
            cells = [loader[:110]] * len(methods)
        else:
            try:
                model, inputs = loader()
                cells = [_timed(name, fmt, method, model, inputs) for method in methods]
            except ServiceError as exc:  # the intake refused the model
                cells = [f"{exc.reason}: {' '.join(exc.message.split())[:110]}"] * len(methods)
        lines.append(f"| {name} | {fmt} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        print(f"{time.monotonic() - started:6.1f}s {lines[-1]}", flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="", help="comma-separated families (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    only = {m for m in args.models.split(",") if m}
    lines = table(only, [m for m in args.methods.split(",") if m])
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
