"""Latency targets on the zoo: does the search reach 2x / 3x measured, and beat uniform pruning there?

For each model (ResNet-18-like, MobileNetV2-like, an SE net as the EfficientNet-like family, a ViT-like
encoder) at ``--size`` px, batch 1, one thread, ONNX Runtime CPU, every job is a full pipeline run
(``run_optimization``: search, final benchmark by the service's own protocol, report):

1. target 2x with ``techniques: [channel]`` on cold latency tables, then the same job again on the
   tables the first one stored (warm): search seconds and table entries timed, side by side;
2. target 3x with channel pruning and INT8 allowed;
3. uniform CHANNEL pruning (every group the same ratio, ``round_to`` 8) bisected on its ratio until its
   measured speed-up is closest to what the 2x search's selected model measured: fidelity (cosine,
   top-1 agreement on the same 32 synthetic inputs) of both at (about) the same latency.

Printed: measured speed-up of the selected variant (final benchmark) against the target (goal: within
7 %), the median prediction error of the latency tables over the candidates (goal: <= 10 %), warm vs
cold search time, and the fidelity of search vs uniform.

Usage: ``python bench/latency_target.py [--size 224] [--models resnet18,mobilenetv2,senet,vit]``.
Not run by the tests (minutes per model at 224 px).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.pipeline import run_optimization

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.zoo import ZooEntry, export
from tests.zoo_cnn import MobileNetV2Like, ResNet18, SENetLike
from tests.zoo_transformers import ViTLike

MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda size: ResNet18(64),
    "mobilenetv2": lambda size: MobileNetV2Like(),
    "senet": lambda size: SENetLike(),
    "vit": lambda size: ViTLike(dim=192, heads=3, patch=16, size=size),
}


def _spec(size: int, **fields: object) -> spec_pb2.OptimizationSpec:
    return spec_pb2.OptimizationSpec(
        inputs=[model_pb2.InputSpec(name="image", shape=[1, 3, size, size])],
        benchmark=spec_pb2.BenchmarkSpec(threads=1, max_seconds=20.0),
        evaluation=spec_pb2.EvaluationSpec(samples=32),
        **fields,  # type: ignore[arg-type]
    )


def _job(
    model: Path, spec: spec_pb2.OptimizationSpec, work: Path, tables: Path
) -> report_pb2.OptimizationReport:
    work.mkdir(parents=True, exist_ok=True)
    return run_optimization(
        model, model_pb2.MODEL_FORMAT_ONNX, spec, work, lambda *a, **k: None, latency_tables=tables
    ).report


def _variant(report: report_pb2.OptimizationReport, name: str = "") -> report_pb2.ModelVariant:
    if not name:
        name = next(v.name for v in report.variants if report_pb2.VARIANT_FLAG_SELECTED in v.flags)
    return next(v for v in report.variants if v.name == name)


def _uniform(model: Path, size: int, goal: float, work: Path, tables: Path) -> report_pb2.ModelVariant:
    low, high, best = 0.05, 0.9, None
    for step in range(6):
        ratio = (low + high) / 2
        prune = spec_pb2.PruneSpec(
            method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=ratio, scope=spec_pb2.PRUNE_SCOPE_PER_LAYER
        )
        variant = _variant(_job(model, _spec(size, prune=prune), work / f"u{step}", tables), "pruned")
        if best is None or abs(variant.latency_speedup - goal) < abs(best.latency_speedup - goal):
            best = variant
        if variant.latency_speedup < goal:
            low = ratio
        else:
            high = ratio
    assert best is not None
    return best


def _row(name: str, target: float, report: report_pb2.OptimizationReport, seconds: float) -> list[str]:
    chosen = _variant(report)
    search = report.search
    table = search.tables[0]
    return [
        name,
        f"{target:g}x",
        chosen.name,
        f"{chosen.latency_speedup:.2f}x",
        f"{chosen.latency_speedup / target - 1:+.1%}",
        f"{chosen.stats.quality.cosine_similarity:.4f}",
        f"{chosen.stats.quality.top1_agreement:.3f}",
        f"{search.median_prediction_error:.1%}",
        f"{search.seconds:.0f} s / {seconds:.0f} s",
        f"{'warm' if table.reused else 'cold'} ({table.entries_timed}/{table.entries_used} timed)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows: list[list[str]] = []
    versus: list[list[str]] = []
    errors: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root, tables = Path(tmp), Path(tmp) / "tables"
        for name in args.models.split(","):
            entry = ZooEntry(
                name,
                lambda n=name: MODELS[n](args.size),
                (model_pb2.InputSpec(name="image", shape=[1, 3, args.size, args.size]),),
            )
            model = export(entry.build(), entry, root / f"{name}.onnx", "legacy", 17)
            runs = [
                (2.0, ["channel"], "cold"),
                (2.0, ["channel"], "warm"),
                (3.0, ["channel", "static_int8", "dynamic_int8"], ""),
            ]
            two = None
            for target, techniques, label in runs:
                spec = _spec(
                    args.size, target=spec_pb2.TargetSpec(latency_speedup=target, techniques=techniques)
                )
                started = time.monotonic()
                report = _job(model, spec, root / f"{name}-{target}-{label}", tables)
                rows.append(_row(name, target, report, time.monotonic() - started))
                errors += [abs(c.prediction_error) for c in report.search.candidates]
                print(" | ".join(rows[-1]), flush=True)
                if label == "cold":
                    two = _variant(report)
            assert two is not None
            uniform = _uniform(model, args.size, two.latency_speedup, root / f"{name}-uniform", tables)
            versus.append(
                [
                    name,
                    f"{two.latency_speedup:.2f}x / {uniform.latency_speedup:.2f}x",
                    f"{two.stats.quality.cosine_similarity:.4f} / "
                    f"{uniform.stats.quality.cosine_similarity:.4f}",
                    f"{two.stats.quality.top1_agreement:.3f} / {uniform.stats.quality.top1_agreement:.3f}",
                ]
            )
            print(" | ".join(versus[-1]), flush=True)
    print(f"\n{args.size} px, batch 1, 1 thread, ONNX Runtime CPU")
    print(
        "| model | target | selected | measured | vs target | cosine | top-1 agr. | median pred. error "
        "| search / job | table |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| model | speed-up search / uniform | cosine search / uniform | top-1 agr. search / uniform |")
    print("|---|---:|---:|---:|")
    for row in versus:
        print("| " + " | ".join(row) + " |")
    if errors:
        print(f"\nmedian |prediction error| over every candidate: {statistics.median(errors):.1%}")


if __name__ == "__main__":
    main()
