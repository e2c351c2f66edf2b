"""EARLY_EXIT on the digits CNN, measured per input over the eval split, against static CHANNEL pruning.

The demo's digits CNN (32-96-96 channels, ``scripts/digits.py``) is trained and exported with batch 1;
one DYNAMIC job (``form: EARLY_EXIT``, threshold calibrated to at most 1 point of accuracy lost) runs
through :func:`run_optimization` with the train and eval shards. Printed: the dynamic report's
per-input latency (mean, p50, p90, p99) and accuracy for the original and the dynamic model, the exits'
shares and the threshold sweep. Then static CHANNEL pruning at several MACs reductions, each fine-tuned
(distillation, ``--steps``) like the demo, timed per input over the same eval inputs against the
original in the same way (interleaved), so the static model whose mean latency is closest to the
dynamic one can be compared at equal latency.

Usage: ``python bench/dynamic_early_exit.py [--steps 200] [--reductions 2,4,8]``. Not run by the tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

from scripts.digits import INPUT_NAME, digits_split, export_onnx, train_digits_cnn, write_shards  # noqa: E402

from prunekit.v1 import model_pb2, spec_pb2  # noqa: E402
from prunekit_server.measure.dynamic import measure_per_input  # noqa: E402
from prunekit_server.pipeline import JobData, StagedShard, run_optimization  # noqa: E402


def _job(model: Path, spec: spec_pb2.OptimizationSpec, data: JobData, work: Path) -> object:
    spec.data.CopyFrom(spec_pb2.DataSpec(train=[s.uri for s in data.train], eval=[s.uri for s in data.eval]))
    spec.benchmark.CopyFrom(spec_pb2.BenchmarkSpec(max_seconds=5.0))
    return run_optimization(model, model_pb2.MODEL_FORMAT_ONNX, spec, work, lambda *a, **k: None, data=data)


def _finetune(steps: int) -> spec_pb2.FinetuneSpec:
    tune = spec_pb2.FinetuneSpec(steps=steps, batch_size=64, learning_rate=3e-3, device=spec_pb2.DEVICE_CPU)
    tune.distillation.temperature = 4.0
    tune.distillation.alpha = 0.5
    return tune


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps of each static model")
    parser.add_argument("--reductions", default="2,4,8", help="CHANNEL target_macs_reduction values")
    args = parser.parse_args()
    train, held_out = digits_split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        original = export_onnx(
            train_digits_cnn(epochs=8, c1=32, c2=96, c3=96), root / "cnn.onnx", batch_size=1
        )
        data = JobData(
            train=[StagedShard(p, uri=p.as_uri()) for p in write_shards(root / "t", *_xy(train), shards=1)],
            eval=[StagedShard(p, uri=p.as_uri()) for p in write_shards(root / "e", *_xy(held_out), shards=1)],
        )
        dynamic = spec_pb2.OptimizationSpec(
            prune=spec_pb2.PruneSpec(
                method=spec_pb2.PRUNE_METHOD_DYNAMIC,
                dynamic=spec_pb2.DynamicSpec(form=spec_pb2.DYNAMIC_FORM_EARLY_EXIT),
            ),
            evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=0.01),
        )
        report = _job(original, dynamic, data, root / "dynamic").report  # type: ignore[attr-defined]
        d = report.dynamic
        print(f"EARLY_EXIT on the digits CNN 32-96-96, batch 1, {d.inputs}")
        for m in d.models:
            print(
                f"  {m.name:9s} mean {m.mean_ms:.4f} ms  p50 {m.p50_ms:.4f}  p90 {m.p90_ms:.4f}  "
                f"p99 {m.p99_ms:.4f}  accuracy {m.accuracy:.2%}"
            )
        print(f"  mean speed-up {d.mean_speedup:.2f}x at threshold {d.threshold:g} ({d.calibration_rule})")
        for e in d.exits:
            where = f"after {e.after or '-'}, MACs {e.macs_fraction:.1%}"
            print(f"  {e.name}: {where}, inputs leaving {e.share:.1%}")
        for p in d.sweep:
            timed = f", mean {p.mean_ms:.4f} ms" if p.mean_ms else ""
            print(f"  threshold {p.threshold:g}: accuracy {p.metric:.2%}, MACs {p.macs_fraction:.1%}{timed}")
        dynamic_mean = d.models[1].mean_ms
        feeds = [{INPUT_NAME: x[None]} for x in held_out.inputs[0]]
        print(f"static CHANNEL pruning, fine-tuned {args.steps} steps (distillation), timed per input alike")
        for reduction in (float(r) for r in args.reductions.split(",")):
            spec = spec_pb2.OptimizationSpec(
                prune=spec_pb2.PruneSpec(
                    method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=reduction
                ),
                finetune=_finetune(args.steps),
            )
            _job(original, spec, data, root / f"channel{reduction:g}")
            pruned = root / f"channel{reduction:g}" / "artifacts" / "pruned.onnx"
            measured = measure_per_input(
                {"original": original, "pruned": pruned}, feeds, reference="original", labels=held_out.label
            ).models
            o, s = measured["original"], measured["pruned"]
            print(
                f"  {reduction:g}x MACs: mean {s.mean_ms:.4f} ms (original {o.mean_ms:.4f}, "
                f"{o.mean_ms / s.mean_ms:.2f}x), accuracy {s.accuracy:.2%} (original {o.accuracy:.2%}); "
                f"dynamic mean {dynamic_mean:.4f} ms at {d.models[1].accuracy:.2%}"
            )


def _xy(dataset: object) -> tuple[object, object]:
    return dataset.inputs[0], dataset.label  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
