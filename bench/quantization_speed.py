"""Quantization speed on the ResNet-style sample at 224 px, batch 1, one thread, measured side by side.

Three measurements, each one interleaved run under the service's protocol (windows until three agree
within 10 % or the time budget ends):

1. static INT8 (QDQ) against float32: a quantize-only job through the real pipeline (target >= 2.5x);
2. the same float32 model timed twice in one run: p50s within 10 % of each other;
3. channel-pruned to half the MACs plus static INT8 against float32 (target >= 4x), with the kept
   widths rounded to multiples of 8 and of 16 (the default ``round_to`` is 8).

Usage: ``python bench/quantization_speed.py [--width 64] [--iterations 20] [--max-seconds 60]
[--round-to 8,16]``.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.measure.benchmark import benchmark, onnx_factory
from prunekit_server.measure.latency import cpu_model, runtime_name
from prunekit_server.measure.quality import synthetic_inputs
from prunekit_server.pipeline import run_optimization
from prunekit_server.spec_check import check_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.samples import write_sample_model

SIZE = 224
INT8_TARGET = 2.5
PRUNED_INT8_TARGET = 4.0
SAME_MODEL_TOLERANCE = 0.10


def _job(model: Path, spec: spec_pb2.OptimizationSpec, workdir: Path) -> report_pb2.OptimizationReport:
    def progress(stage: str, fraction: float, message: str) -> None:
        print(f"  {fraction * 100:3.0f}% {stage}: {message}", flush=True)

    return run_optimization(model, model_pb2.MODEL_FORMAT_ONNX, spec, workdir, progress).report


def _line(name: str, latency: report_pb2.LatencyStats) -> str:
    state = "stable" if latency.stable else "NOT stable"
    return (
        f"  {name:<16} p50 {latency.p50_ms:8.2f} ms  p90 {latency.p90_ms:8.2f} ms  "
        f"{latency.windows} windows ({state}), peak memory {latency.peak_memory_bytes / 2**20:.1f} MiB"
    )


def _channel_pruning(bench: spec_pb2.BenchmarkSpec, round_to: int) -> spec_pb2.OptimizationSpec:
    """Channel pruning to half the MACs with kept widths rounded to ``round_to``, plus static INT8."""
    prune = spec_pb2.PruneSpec(
        method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=2.0, round_to=round_to
    )
    spec = spec_pb2.OptimizationSpec(
        prune=prune,
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8),
        benchmark=bench,
        evaluation=spec_pb2.EvaluationSpec(samples=16),
    )
    check_spec(spec, model_pb2.MODEL_FORMAT_ONNX)
    return spec


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--width",
        type=int,
        default=64,
        help="channels of the first stage (default 64: ResNet widths 64-128-256)",
    )
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per model and window")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time budget of the windows")
    parser.add_argument(
        "--round-to",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[8, 16],
        help="channel rounding of the pruned models, comma-separated (default 8,16)",
    )
    args = parser.parse_args()
    bench = spec_pb2.BenchmarkSpec(
        batch_size=1, threads=1, warmup=5, iterations=args.iterations, max_seconds=args.max_seconds
    )
    print(f"{runtime_name()}, CPU {cpu_model()}, batch 1, 1 thread, {SIZE}x{SIZE} px, width {args.width}\n")
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prunekit-bench-") as tmp:
        root = Path(tmp)
        model = root / "resnet_style.onnx"
        shape = write_sample_model(model, "onnx", "cnn", width=args.width, image_size=SIZE)

        print("1. static INT8 (QDQ, per-channel, minmax on 64 synthetic samples) against float32")
        spec = spec_pb2.OptimizationSpec(
            quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8),
            benchmark=bench,
            evaluation=spec_pb2.EvaluationSpec(samples=16),
        )
        report = _job(model, spec, root / "int8")
        (int8,) = report.variants
        print(_line("float32", report.baseline.latency))
        print(_line(int8.name, int8.stats.latency))
        q = int8.stats.quality
        print(
            f"  MACs {report.baseline.macs / 1e9:.2f} G; quality: top-1 {q.top1_agreement:.3f}, "
            f"cosine {q.cosine_similarity:.5f}"
        )
        ok = int8.latency_speedup >= INT8_TARGET
        verdicts.append(
            f"static INT8 vs float32: {int8.latency_speedup:.2f}x (target >= {INT8_TARGET}x) "
            f"{'MET' if ok else 'MISSED'}"
        )

        print("\n2. the same float32 model timed twice in one run")
        feed = synthetic_inputs([model_pb2.InputSpec(name="input", shape=shape)], 1, 0)[0]
        same = benchmark(
            {"first": onnx_factory(model, feed, threads=1), "second": onnx_factory(model, feed, threads=1)},
            batch_size=1,
            threads=1,
            warmup=5,
            iterations=args.iterations,
            max_seconds=args.max_seconds,
        ).latencies
        for name, latency in same.items():
            state = "stable" if latency.stable else "NOT stable"
            print(f"  {name:<16} p50 {latency.p50_ms:8.2f} ms  {latency.windows} windows ({state})")
        a, b = same["first"].p50_ms, same["second"].p50_ms
        gap = abs(a - b) / min(a, b)
        verdicts.append(
            f"same model twice: p50s {gap:.1%} apart (target within {SAME_MODEL_TOLERANCE:.0%}) "
            f"{'MET' if gap <= SAME_MODEL_TOLERANCE else 'MISSED'}"
        )

        print("\n3. channel-pruned to half the MACs plus static INT8 against float32")
        for round_to in args.round_to:
            print(f"  round_to {round_to}")
            report = _job(model, _channel_pruning(bench, round_to), root / f"pruned-{round_to}")
            by_name = {v.name: v for v in report.variants}
            print(_line("float32", report.baseline.latency))
            for key in ("pruned", "pruned_int8"):
                print(_line(key, by_name[key].stats.latency) + f"  MACs /{by_name[key].macs_reduction:.2f}")
            speedup = by_name["pruned_int8"].latency_speedup
            met = "MET" if speedup >= PRUNED_INT8_TARGET else "MISSED"
            verdicts.append(
                f"channel-pruned (round_to {round_to}, {by_name['pruned'].macs_reduction:.2f}x fewer MACs, "
                f"{by_name['pruned'].latency_speedup:.2f}x faster) + INT8 vs float32: "
                f"{speedup:.2f}x (target >= {PRUNED_INT8_TARGET}x) {met}"
            )
    print("\nResults:")
    for verdict in verdicts:
        print(f"  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
