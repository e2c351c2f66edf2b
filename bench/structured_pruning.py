"""Structured pruning on the test zoo: a coverage table (every method) and a latency table (CHANNEL).

1. **Coverage**: every zoo model x format (legacy ONNX, dynamo ONNX, TorchScript
   script and trace) x method, each a full job through the pipeline
   (``run_optimization``: intake, pruning, TorchScript output, quality, a short
   benchmark, report). A cell is ``ok`` with the MACs reduction reached, or the
   reason it is not: the job's error, an output shape that changed, a
   ``pruned.onnx`` ONNX Runtime cannot run or a ``pruned.pt`` that does not load
   and run. CHANNEL asks for 2x fewer MACs (``round_to`` 1: the zoo is narrow),
   NEURON, LAYER and ATTENTION_HEAD for half of their units, N_M for 2:4 sparsity.
   A method with nothing to prune in a model is ``n/a`` with the service's reason.
2. **Latency**: CNNs at 224 px, batch 1, one thread, ONNX Runtime CPU, the
   service's own protocol (baseline and pruned interleaved, windows until three
   agree): CHANNEL to 2x fewer MACs at ``round_to`` 1, 8 and 16, and the measured
   speed-up divided by the MACs reduction. Target: >= 0.75 for the ResNet-18-style
   net at ``round_to`` 8 (Torch-Pruning's own figures are 0.34-0.57).

Usage: ``python bench/structured_pruning.py [--skip-coverage] [--skip-latency]
[--coverage-models shufflenetv2,vad] [--latency-models resnet18,mobilenetv2] [--iterations 20]
[--max-seconds 30]``.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.measure.latency import cpu_model, runtime_name
from prunekit_server.pipeline import run_optimization

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.zoo import FORMATS, ZOO, ZooEntry, cached, export, resnet18

TARGET = 0.75
LATENCY_MODELS = ("resnet18", "mobilenetv2", "densenet", "senet", "unet")
ROUND_TO = (1, 8, 16)
METHODS = {
    "CHANNEL": spec_pb2.PruneSpec(
        method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=2.0, round_to=1
    ),
    "NEURON": spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_NEURON, ratio=0.5, round_to=1),
    "LAYER": spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_LAYER, ratio=0.5),
    "ATTENTION_HEAD": spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.5),
    "N_M": spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_N_M),
}


def _quiet(stage: str, fraction: float, message: str) -> None:
    """Progress is not printed: one line per job is."""


def _job(
    path: Path,
    fmt: int,
    prune: spec_pb2.PruneSpec,
    inputs: list[model_pb2.InputSpec],
    bench: spec_pb2.BenchmarkSpec,
    workdir: Path,
) -> tuple[report_pb2.OptimizationReport, dict[str, Path]]:
    spec = spec_pb2.OptimizationSpec(
        prune=prune, benchmark=bench, evaluation=spec_pb2.EvaluationSpec(samples=4)
    )
    if fmt == model_pb2.MODEL_FORMAT_TORCHSCRIPT or any(i.HasField("value") for i in inputs):
        spec.inputs.extend(inputs)  # TorchScript needs them; a fixed value must be given
    result = run_optimization(path, fmt, spec, workdir, _quiet)
    return result.report, result.artifacts


def _outputs_ok(entry: ZooEntry, artifacts: dict[str, Path]) -> str:
    """Why the pruned files fail the checks ("" when they pass)."""
    sample = entry.sample()
    with torch.no_grad():
        expected = tuple(entry.build()(*sample).shape)
    model = onnx.load(str(artifacts["pruned.onnx"]))
    initializers = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, sample, strict=True)})[0]
    if tuple(got.shape) != expected or not np.isfinite(got).all():
        return f"pruned.onnx output {list(got.shape)} (want {list(expected)})"
    if "pruned.pt" in artifacts:
        module = torch.jit.load(str(artifacts["pruned.pt"]))
        with torch.no_grad():
            out = module(*sample)
        if tuple(out.shape) != expected:
            return f"pruned.pt output {list(out.shape)} (want {list(expected)})"
    return ""


def coverage(root: Path, only: list[str] | None = None) -> list[str]:
    bench = spec_pb2.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.3)
    names = [n for n in ZOO if n != "resnet18" and (not only or n in only)]
    lines = ["| model | format | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for name in names:
        entry = ZOO[name]
        for fmt in FORMATS:
            cells = []
            path = cached(name, fmt)
            kind = model_pb2.MODEL_FORMAT_TORCHSCRIPT if path.suffix == ".pt" else model_pb2.MODEL_FORMAT_ONNX
            for method, prune in METHODS.items():
                started = time.monotonic()
                try:
                    report, artifacts = _job(
                        path, kind, prune, list(entry.inputs), bench, root / f"{name}-{fmt}-{method}"
                    )
                    problem = _outputs_ok(entry, artifacts)
                    (variant,) = report.variants
                    codes = [w.code for w in report.warnings]
                    note = f"ok {variant.macs_reduction:.2f}x"
                    if codes.count("GROUP_SKIPPED"):
                        note += f", {codes.count('GROUP_SKIPPED')} group(s) skipped"
                    if "TORCHSCRIPT_OUTPUT" in codes:
                        message = next(w.message for w in report.warnings if w.code == "TORCHSCRIPT_OUTPUT")
                        note += ", .pt: " + ("trace" if "a trace" in message else "your module")
                    cells.append(problem or note)
                except ServiceError as exc:
                    # A method with nothing to prune in this model answers UNSUPPORTED_MODEL: not applicable.
                    not_applicable = exc.reason == "UNSUPPORTED_MODEL"
                    cells.append(
                        f"n/a ({exc.message[:60]})" if not_applicable else f"{exc.reason}: {exc.message[:90]}"
                    )
                except Exception as exc:  # a bench reports, it does not stop
                    cells.append(f"error: {type(exc).__name__}: {str(exc)[:90]}")
                print(
                    f"  {name:<12} {fmt:<7} {method:<8} {time.monotonic() - started:5.1f}s  {cells[-1]}",
                    flush=True,
                )
            lines.append(f"| {name} | {fmt} | " + " | ".join(cells) + " |")
    return lines


def _at(name: str, size: int) -> ZooEntry:
    if name == "resnet18":
        return resnet18(size)
    entry = ZOO[name]
    shape = [1, 3, size, size]
    return dataclasses.replace(
        entry, name=f"{name}-{size}", inputs=(model_pb2.InputSpec(name="image", shape=shape),)
    )


def latency(
    root: Path, models: list[str], iterations: int, max_seconds: float
) -> tuple[list[str], list[str]]:
    bench = spec_pb2.BenchmarkSpec(
        batch_size=1, threads=1, warmup=5, iterations=iterations, max_seconds=max_seconds
    )
    lines = [
        "| model (224 px) | round_to | MACs reduction | p50 before (ms) | p50 after (ms) | speed-up "
        "| speed-up / MACs |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name in models:
        entry = _at(name, 224)
        path = export(entry.build(), dataclasses.replace(entry), root / f"{entry.name}.onnx", "legacy", 17)
        for round_to in ROUND_TO:
            prune = spec_pb2.PruneSpec(
                method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=2.0, round_to=round_to
            )
            report, _ = _job(
                path, model_pb2.MODEL_FORMAT_ONNX, prune, [], bench, root / f"lat-{name}-{round_to}"
            )
            (variant,) = report.variants
            ratio = variant.latency_speedup / variant.macs_reduction
            before, after = report.baseline.latency.p50_ms, variant.stats.latency.p50_ms
            lines.append(
                f"| {name} | {round_to} | {variant.macs_reduction:.2f}x | {before:.2f} | {after:.2f} "
                f"| {variant.latency_speedup:.2f}x | {ratio:.2f} |"
            )
            print("  " + lines[-1], flush=True)
            if name == "resnet18" and round_to == 8:
                met = "MET" if ratio >= TARGET else "MISSED"
                verdicts.append(
                    f"ResNet-18-style, 224 px, round_to 8: speed-up / MACs reduction = {ratio:.2f} "
                    f"(target >= {TARGET}) {met}"
                )
    return lines, verdicts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-models", default=",".join(LATENCY_MODELS))
    parser.add_argument("--coverage-models", default="", help="comma-separated zoo names (default: all)")
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per model and window")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time budget of the windows")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print(f"{runtime_name()}, CPU {cpu_model()}, torch {torch.__version__}\n")
    tables: list[str] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prunekit-bench-") as tmp:
        root = Path(tmp)
        if not args.skip_coverage:
            print("1. coverage: model x format x method, each a job through the pipeline")
            tables += [
                "",
                "Coverage (CHANNEL: 2x fewer MACs, round_to 1; NEURON: ratio 0.5)",
                "",
                *coverage(root, [n for n in args.coverage_models.split(",") if n]),
            ]
        if not args.skip_latency:
            print("\n2. latency: batch 1, 1 thread, ONNX Runtime CPU, CHANNEL to 2x fewer MACs")
            lines, verdicts = latency(root, args.latency_models.split(","), args.iterations, args.max_seconds)
            tables += ["", "Latency", "", *lines]
    print("\n".join(tables))
    if verdicts:
        print("\nResults:")
        for verdict in verdicts:
            print(f"  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
