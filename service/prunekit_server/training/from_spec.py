"""The fine-tuning spec (``spec_pb2.FinetuneSpec``) read into a :class:`.plan.FinetunePlan`.

The one module of the training room that reads the proto. :func:`finetune_plan`
applies the proto's defaults (AdamW at 1e-3, SGD at 1e-2 with momentum 0.9,
batch 32, temperature 4, alpha 0.5, feature weight 1, a checkpoint every
60 s when neither interval is set, device AUTO, mixed precision on) to a spec
that passed the spec rules.
"""

from __future__ import annotations

from prunekit.v1 import spec_pb2

from ..errors import FieldViolation, invalid_spec
from .config import Device, FinetuneConfig, Optimizer, Schedule
from .plan import FinetunePlan

DEFAULT_CHECKPOINT_SECONDS = 60.0
_OPTIMIZERS: dict[int, Optimizer] = {
    spec_pb2.OPTIMIZER_UNSPECIFIED: "adamw",
    spec_pb2.OPTIMIZER_ADAMW: "adamw",
    spec_pb2.OPTIMIZER_SGD: "sgd",
}
_SCHEDULES: dict[int, Schedule] = {
    spec_pb2.LR_SCHEDULE_UNSPECIFIED: "cosine",
    spec_pb2.LR_SCHEDULE_COSINE: "cosine",
    spec_pb2.LR_SCHEDULE_LINEAR: "linear",
    spec_pb2.LR_SCHEDULE_CONSTANT: "constant",
}
_DEVICES: dict[int, Device] = {
    spec_pb2.DEVICE_UNSPECIFIED: "auto",
    spec_pb2.DEVICE_CPU: "cpu",
    spec_pb2.DEVICE_CUDA: "cuda",
}


def finetune_plan(spec: spec_pb2.FinetuneSpec) -> FinetunePlan:
    """The plan of a ``FinetuneSpec`` (already checked by the spec rules); ``INVALID_SPEC`` otherwise."""
    optimizer = _OPTIMIZERS[spec.optimizer]
    lr = spec.learning_rate or (1e-2 if optimizer == "sgd" else 1e-3)
    distill = spec.HasField("distillation")
    d = spec.distillation
    try:
        config = FinetuneConfig(
            epochs=spec.epochs,
            steps=spec.steps,
            max_seconds=spec.max_seconds,
            batch_size=spec.batch_size or 32,
            optimizer=optimizer,
            lr=lr,
            momentum=spec.momentum or 0.9,
            weight_decay=spec.weight_decay,
            schedule=_SCHEDULES[spec.schedule],
            warmup_steps=spec.warmup_steps,
            grad_clip=spec.grad_clip,
            seed=spec.seed,
            eval_every=spec.eval_every,
            patience=spec.patience,
            device=_DEVICES[spec.device],
            mixed_precision=spec.mixed_precision if spec.HasField("mixed_precision") else True,
            temperature=d.temperature or 4.0,
            alpha=d.alpha if d.HasField("alpha") else 0.5,
        )
    except ValueError as exc:
        raise invalid_spec([FieldViolation("spec.finetune", str(exc))]) from None
    steps, seconds = spec.checkpoint_every_steps, spec.checkpoint_every_seconds
    return FinetunePlan(
        config=config,
        distill=distill,
        feature_layers=tuple(d.feature_layers) if distill else (),
        feature_weight=d.feature_weight or 1.0,
        checkpoint_every_steps=steps,
        checkpoint_every_seconds=seconds or (0.0 if steps else DEFAULT_CHECKPOINT_SECONDS),
        steps_per_round=spec.steps_per_round,
    )
