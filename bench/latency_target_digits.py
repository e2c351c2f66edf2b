"""The digits task with data: a 2x latency target with ``max_accuracy_drop: 0.01``, fine-tuned.

The digits CNN (scripts/digits.py) is trained, exported and its shards written; one job asks for
``target: {latency_speedup: 2, max_accuracy_drop: 0.01, techniques: [channel]}`` with distillation
fine-tuning (400 steps) on the train split, and the labelled eval split judges. Printed: accuracy
before and after, the selected variant's measured speed-up (final benchmark) and its flags.
Usage: ``python bench/latency_target_digits.py [--batch 64] [--threads 1]``. Not run by the tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.pipeline import JobData, StagedShard, run_optimization

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.finetune_recovery import finetune_spec, make_task
from scripts.digits import INPUT_NAME


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--techniques", default="channel", help="comma-separated search techniques")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = make_task(0, Path(tmp))
        data = JobData(
            train=[StagedShard(p, uri=p.as_uri()) for p in task.train_shards],
            eval=[StagedShard(p, uri=p.as_uri()) for p in task.eval_shards],
        )
        spec = spec_pb2.OptimizationSpec(
            inputs=[model_pb2.InputSpec(name=INPUT_NAME, shape=[args.batch, 1, 8, 8])],
            target=spec_pb2.TargetSpec(
                latency_speedup=args.speedup,
                max_accuracy_drop=0.01,
                techniques=args.techniques.split(","),
                budget_seconds=120,
            ),
            benchmark=spec_pb2.BenchmarkSpec(threads=args.threads, max_seconds=10.0),
            data=spec_pb2.DataSpec(train=[s.uri for s in data.train], eval=[s.uri for s in data.eval]),
        )
        tune = finetune_spec("distillation", args.steps, 0)
        assert tune is not None
        spec.finetune.CopyFrom(tune)
        report = run_optimization(
            task.onnx_path,
            model_pb2.MODEL_FORMAT_ONNX,
            spec,
            Path(tmp) / "job",
            lambda *a, **k: None,
            data=data,
        ).report
    chosen = next(v for v in report.variants if report_pb2.VARIANT_FLAG_SELECTED in v.flags)
    flags = [report_pb2.VariantFlag.Name(f) for f in chosen.flags]
    before = report.finetune.before.top1 if report.HasField("finetune") else float("nan")
    print(f"batch {args.batch}, {args.threads} thread(s): target {args.speedup:g}x, max drop 1 point")
    print(
        f"accuracy: original {report.baseline.accuracy.top1:.2%}, pruned before fine-tuning {before:.2%}, "
        f"after {chosen.stats.accuracy.top1:.2%} ({chosen.name})"
    )
    print(
        f"measured speed-up {chosen.latency_speedup:.2f}x; "
        f"MACs {report.baseline.macs:,} -> {chosen.stats.macs:,}"
    )
    print(
        f"flags: {', '.join(flags)}; search met: {report.search.met}; "
        f"candidates: {len(report.search.candidates)}"
    )
    for w in report.warnings:
        print(f"warning {w.code}: {w.message}")
    for c in report.search.candidates:
        print(
            f"  {c.name} {c.quantization}: predicted {c.predicted_p50_ms:.3f} ms, "
            f"measured {c.measured_p50_ms:.3f} ms "
            f"({c.measured_speedup:.2f}x), MACs {c.macs:,}, cosine {c.quality.cosine_similarity:.3f}"
            + (" selected" if c.selected else "")
        )
        narrowed = ", ".join(f"{w.layer} {w.width_before}->{w.width_after}" for w in c.widths)
        removed = ", ".join(c.removed_layers)
        print(f"    widths: {narrowed or '-'}; removed: {removed or '-'}")


if __name__ == "__main__":
    main()
