"""TOKEN_SKIP on the zoo's ViT-like encoder trained on the digits, per input, against static CHANNEL pruning.

The zoo's ``ViTLike`` (``tests/zoo_transformers.py``: patch embedding, class token, two pre-norm
encoder layers) at ``--dim`` width with 4 x 4 patches of the digits upscaled to 32 x 32 (65 tokens) is
trained ``--train-steps`` AdamW steps and exported with batch 1. One DYNAMIC job (``form: TOKEN_SKIP``,
``--scorer`` learned or attention, the later layers distilled ``--distill-steps`` steps unless
``--frozen``; kept tokens calibrated on the calibration half of the eval split to top-1 agreement
>= 0.97 with the original, or with ``--rule accuracy`` to at most 1 point of accuracy lost) runs through
:func:`run_optimization`. Printed: per-input latency (mean, p50, p90,
p99) and accuracy / top-1 agreement of the original and the dynamic model over the measurement half,
the tokens per layer, the kept-token sweep. Then static CHANNEL pruning at several MACs reductions
(none with ``--reductions ""``), fine-tuned (distillation, ``--steps``), timed per input over the whole
eval split against the original, interleaved.

Usage: ``python bench/dynamic_tokens.py [--dim 128] [--train-steps 400] [--steps 200] [--scorer learned]
[--distill-steps 300] [--frozen]``. Not run by the tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "service"), str(ROOT / "client")]

import torch  # noqa: E402
from scripts.digits import INPUT_NAME, digits_split, write_shards  # noqa: E402
from tests.zoo_transformers import ViTLike  # noqa: E402
from torch.nn import functional  # noqa: E402

from prunekit.v1 import model_pb2, spec_pb2  # noqa: E402
from prunekit_server.measure.dynamic import measure_per_input  # noqa: E402
from prunekit_server.pipeline import JobData, StagedShard, run_optimization  # noqa: E402


def _images(x: np.ndarray) -> np.ndarray:
    """8 x 8 digits as 3 x 32 x 32 images (each pixel a 4 x 4 block, the channel repeated)."""
    big = np.kron(x, np.ones((1, 1, 4, 4), dtype=np.float32))
    return np.repeat(big, 3, axis=1).astype(np.float32)


def _train(x: np.ndarray, y: np.ndarray, dim: int, steps: int) -> ViTLike:
    torch.manual_seed(0)
    model = ViTLike(dim=dim, heads=4, patch=4, size=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(images), (64,), generator=generator)
        loss = functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
    return model.eval()


def _job(model: Path, spec: spec_pb2.OptimizationSpec, data: JobData, work: Path) -> object:
    spec.inputs.append(model_pb2.InputSpec(name=INPUT_NAME, shape=[1, 3, 32, 32]))
    spec.data.CopyFrom(spec_pb2.DataSpec(train=[s.uri for s in data.train], eval=[s.uri for s in data.eval]))
    spec.benchmark.CopyFrom(spec_pb2.BenchmarkSpec(max_seconds=5.0))
    return run_optimization(model, model_pb2.MODEL_FORMAT_ONNX, spec, work, lambda *a, **k: None, data=data)


def _static(
    args: argparse.Namespace, original: Path, data: JobData, root: Path, x: np.ndarray, y: np.ndarray
) -> None:
    feeds = [{INPUT_NAME: image[None]} for image in x]
    print(f"static CHANNEL pruning, fine-tuned {args.steps} steps (distillation), timed per input alike")
    for reduction in (float(r) for r in args.reductions.split(",") if r):
        tune = spec_pb2.FinetuneSpec(steps=args.steps, batch_size=64, learning_rate=1e-3)
        tune.distillation.temperature = 4.0
        spec = spec_pb2.OptimizationSpec(
            prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_CHANNEL, target_macs_reduction=reduction),
            finetune=tune,
        )
        try:
            _job(original, spec, data, root / f"channel{reduction:g}")
        except Exception as exc:  # report what static pruning cannot do on this model, and go on
            print(f"  {reduction:g}x MACs: failed: {exc}")
            continue
        pruned = root / f"channel{reduction:g}" / "artifacts" / "pruned.onnx"
        measured = measure_per_input(
            {"original": original, "pruned": pruned}, feeds, reference="original", labels=y
        ).models
        o, s = measured["original"], measured["pruned"]
        print(
            f"  {reduction:g}x MACs: mean {s.mean_ms:.4f} ms ({o.mean_ms / s.mean_ms:.2f}x), "
            f"accuracy {s.accuracy:.2%} (original {o.accuracy:.2%}), agreement {s.top1_agreement:.2%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps of each static model")
    parser.add_argument("--reductions", default="1.5,2", help="CHANNEL target_macs_reduction values")
    parser.add_argument("--scorer", default="learned", choices=["learned", "attention"])
    parser.add_argument("--distill-steps", type=int, default=300)
    parser.add_argument("--frozen", action="store_true", help="keep the later layers' weights")
    parser.add_argument(
        "--rule",
        default="agreement",
        choices=["agreement", "accuracy"],
        help="calibrate to top-1 agreement >= 0.97 (eval shards without labels; accuracy measured here "
        "after) or to at most 1 point of accuracy lost",
    )
    args = parser.parse_args()
    train, held_out = digits_split()
    x_train, x_eval = _images(train.inputs[0]), _images(held_out.inputs[0])
    if train.label is None or held_out.label is None:
        raise SystemExit("the digits have labels")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = _train(x_train, train.label, args.dim, args.train_steps)
        original = root / "vit.onnx"
        torch.onnx.export(  # a symbolic batch: shapes computed with Shape, as token skipping needs
            model,
            (torch.zeros(1, 3, 32, 32),),
            str(original),
            input_names=[INPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}},
            dynamo=False,
        )
        data = JobData(
            train=[StagedShard(p, uri=p.as_uri()) for p in write_shards(root / "t", x_train, train.label, 1)],
            eval=[
                StagedShard(p, uri=p.as_uri())
                for p in write_shards(root / "e", x_eval, held_out.label, 1, labels=args.rule == "accuracy")
            ],
        )
        spec = spec_pb2.OptimizationSpec(
            prune=spec_pb2.PruneSpec(
                method=spec_pb2.PRUNE_METHOD_DYNAMIC,
                dynamic=spec_pb2.DynamicSpec(
                    form=spec_pb2.DYNAMIC_FORM_TOKEN_SKIP,
                    token_scorer=spec_pb2.TokenScorer.Value(f"TOKEN_SCORER_{args.scorer.upper()}"),
                    frozen_layers=args.frozen,
                    steps=0 if args.frozen and args.scorer == "attention" else args.distill_steps,
                ),
            ),
            evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=0.01, min_top1_agreement=0.97),
        )
        d = _job(original, spec, data, root / "dynamic").report.dynamic  # type: ignore[attr-defined]
        dynamic = root / "dynamic" / "artifacts" / "dynamic.onnx"
        feeds = [{INPUT_NAME: image[None]} for image in x_eval[1::2]]  # the measurement half
        accuracy = measure_per_input(
            {"original": original, "dynamic": dynamic},
            feeds,
            reference="original",
            labels=held_out.label[1::2],
        ).models
        print(f"TOKEN_SKIP on ViTLike(dim={args.dim}, 65 tokens, 2 layers), batch 1, {d.inputs}")
        print(
            f"  scorer {args.scorer}, {d.distill_steps} distillation steps; "
            f"calibrated on {d.calibration_inputs}"
        )
        for m in d.models:
            print(
                f"  {m.name:9s} mean {m.mean_ms:.4f} ms  p50 {m.p50_ms:.4f}  p90 {m.p90_ms:.4f}  "
                f"p99 {m.p99_ms:.4f}  accuracy {accuracy[m.name].accuracy or 0:.2%}  "
                f"agreement {m.top1_agreement:.2%}"
            )
        layers = ", ".join(f"layer {t.layer}: {t.tokens}" for t in d.tokens)
        print(f"  mean speed-up {d.mean_speedup:.2f}x; tokens per layer: {layers} ({d.calibration_rule})")
        for p in d.sweep:
            timed = f", mean {p.mean_ms:.4f} ms" if p.mean_ms else ""
            print(f"  keep {p.keep_tokens}: {d.metric} {p.metric:.2%}, MACs ~{p.macs_fraction:.1%}{timed}")
        _static(args, original, data, root, x_eval, held_out.label)


if __name__ == "__main__":
    main()
