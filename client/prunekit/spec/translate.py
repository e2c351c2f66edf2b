"""From spec messages to technique configs: prune_config, quantize_plan and finetune_plan.

The engines take configs, never spec messages; this is the one place that reads ``PruneSpec``,
``QuantizeSpec`` and ``FinetuneSpec`` into them, applying the spec's defaults (0 means the default; for
fine-tuning: AdamW at 1e-3, SGD at 1e-2 with momentum 0.9, batch 32, temperature 4, alpha 0.5, feature
weight 1, a checkpoint every 60 s when neither interval is set, device AUTO, mixed precision on). A message
that breaks a rule raises :class:`~prunekit.spec.violation.SpecRuleError` listing every violation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunekit.v1 import spec_pb2

from .dynamic_configs import DEFAULT_DYNAMIC_STEPS, DEFAULT_MAX_EXITS, DynamicConfig
from .finetune import DEFAULT_BATCH_SIZE
from .finetune_configs import Device, FinetuneConfig, FinetunePlan, Optimizer, Schedule
from .low_rank_configs import LowRankConfig
from .messages import undefined_enums, unknown_field_numbers
from .names import enum_short_name
from .prune import method_name, prune_violations
from .prune_configs import NMConfig, PruneConfig, UnstructuredConfig, WeightCriterion
from .quantize import AUTO_CANDIDATES
from .quantize_configs import (
    DEFAULT_AWARE_BATCH,
    DEFAULT_AWARE_LR,
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_PERCENTILE,
    AwareTrainingConfig,
    DynamicInt8Config,
    Fp16Config,
    QuantizeConfig,
    QuantizePlan,
    StaticInt8Config,
)
from .structured_configs import (
    DEFAULT_MAX_LAYER_RATIO,
    DEFAULT_ROUND_TO,
    DEFAULT_STEPS,
    ChannelConfig,
    HeadConfig,
    LayerConfig,
    NeuronConfig,
)
from .violation import FieldViolation, SpecRuleError

__all__ = ["finetune_plan", "prune_config", "quantize_config", "quantize_plan"]

_P = spec_pb2


def _ignore(p: spec_pb2.PruneSpec) -> tuple[str, ...]:
    """The ignore globs, then the patterns of the ``ignore: true`` overrides."""
    return (*p.ignore, *(o.pattern for o in p.overrides if o.ignore))


def _overrides(p: spec_pb2.PruneSpec) -> tuple[tuple[str, float], ...]:
    return tuple((o.pattern, o.ratio) for o in p.overrides if not o.ignore)


_CRITERIA: dict[int, WeightCriterion] = {_P.IMPORTANCE_WANDA: "wanda", _P.IMPORTANCE_SPARSEGPT: "sparsegpt"}
"""The importance values that pick a weight-zeroing criterion other than magnitude (L1 and L2 are |w|)."""


def _importance(p: spec_pb2.PruneSpec, default: str) -> str:
    if p.importance == _P.IMPORTANCE_UNSPECIFIED:
        return default
    return enum_short_name(_P.Importance.DESCRIPTOR, p.importance)


def _scope(p: spec_pb2.PruneSpec, default: str) -> Any:
    names = {_P.PRUNE_SCOPE_GLOBAL: "global", _P.PRUNE_SCOPE_PER_LAYER: "per_layer"}
    return names.get(p.scope, default)


def _steps(p: spec_pb2.PruneSpec) -> int:
    return (p.steps or DEFAULT_STEPS) if p.schedule == _P.PRUNE_SCHEDULE_ITERATIVE else 1


def _criterion(p: spec_pb2.PruneSpec) -> WeightCriterion:
    return _CRITERIA.get(p.importance, "magnitude")


def _unstructured(p: spec_pb2.PruneSpec) -> PruneConfig:
    criterion = _criterion(p)
    scope = _scope(p, "global" if criterion == "magnitude" else "per_layer")
    return UnstructuredConfig(ratio=p.ratio, scope=scope, ignore=tuple(p.ignore), importance=criterion)


def _n_m(p: spec_pb2.PruneSpec) -> PruneConfig:
    return NMConfig(
        n=p.n or 2,
        m=p.m or 4,
        ignore=_ignore(p),
        prune_output_layers=p.prune_output_layers,
        importance=_criterion(p),
    )


def _conv_factorization(value: int) -> str:
    return enum_short_name(_P.ConvFactorization.DESCRIPTOR, value) if value else "channel"


def _low_rank(p: spec_pb2.PruneSpec) -> PruneConfig:
    return LowRankConfig(
        ratio=p.ratio,
        target_macs_reduction=p.target_macs_reduction,
        energy=p.low_rank.energy,
        ignore=_ignore(p),
        prune_output_layers=p.prune_output_layers,
        conv=_conv_factorization(p.low_rank.conv),
    )


def _dynamic(p: spec_pb2.PruneSpec) -> PruneConfig:
    d = p.dynamic
    return DynamicConfig(
        form=enum_short_name(_P.DynamicForm.DESCRIPTOR, d.form),  # type: ignore[arg-type]
        exits=tuple(d.exits),
        max_exits=d.max_exits or DEFAULT_MAX_EXITS,
        threshold=d.threshold,
        keep_ratio=d.keep_ratio,
        keep_tokens=d.keep_tokens,
        from_layer=d.from_layer,
        steps=d.steps or DEFAULT_DYNAMIC_STEPS,
        frozen_layers=d.frozen_layers,
        token_scorer=enum_short_name(_P.TokenScorer.DESCRIPTOR, d.token_scorer)
        if d.token_scorer
        else "learned",  # type: ignore[arg-type]
    )


def _structured(
    config_type: type[ChannelConfig | NeuronConfig],
) -> Callable[[spec_pb2.PruneSpec], PruneConfig]:
    def build(p: spec_pb2.PruneSpec) -> PruneConfig:
        return config_type(
            ratio=p.ratio,
            target_macs_reduction=p.target_macs_reduction,
            scope=_scope(p, "global"),
            importance=_importance(p, config_type.importances[0]),
            round_to=p.round_to or DEFAULT_ROUND_TO,
            max_layer_ratio=p.max_layer_ratio or DEFAULT_MAX_LAYER_RATIO,
            ignore=_ignore(p),
            overrides=_overrides(p),
            steps=_steps(p),
            prune_output_layers=p.prune_output_layers,
            auto_ratios=p.auto_ratios,
        )

    return build


def _layer(p: spec_pb2.PruneSpec) -> PruneConfig:
    importance = "sensitivity" if p.auto_ratios else _importance(p, LayerConfig.importances[0])
    return LayerConfig(
        ratio=p.ratio,
        target_macs_reduction=p.target_macs_reduction,
        importance=importance,  # type: ignore[arg-type]
        ignore=_ignore(p),
        prune_output_layers=p.prune_output_layers,
    )


def _heads(p: spec_pb2.PruneSpec) -> PruneConfig:
    return HeadConfig(
        ratio=p.ratio,
        importance=_importance(p, HeadConfig.importances[0]),  # type: ignore[arg-type]
        scope=_scope(p, "per_layer"),
        target_macs_reduction=p.target_macs_reduction,
        max_layer_ratio=p.max_layer_ratio or DEFAULT_MAX_LAYER_RATIO,
        ignore=_ignore(p),
        overrides=_overrides(p),
        steps=_steps(p),
        prune_output_layers=p.prune_output_layers,
    )


_PRUNE: dict[str, Callable[[spec_pb2.PruneSpec], PruneConfig]] = {
    "unstructured": _unstructured,
    "n_m": _n_m,
    "channel": _structured(ChannelConfig),
    "neuron": _structured(NeuronConfig),
    "layer": _layer,
    "attention_head": _heads,
    "low_rank": _low_rank,
    "dynamic": _dynamic,
}
"""``PruneMethod`` short name -> the translation of a ``PruneSpec`` of that method."""


def prune_config(prune_spec: spec_pb2.PruneSpec, *, path: str = "spec.prune") -> PruneConfig:
    """The config a ``PruneSpec`` asks for, with the spec's defaults applied.

    Raises :class:`SpecRuleError` (paths under ``path``) listing every rule the message breaks, or for a
    method with no translation.
    """
    found: list[FieldViolation] = []
    unknown_field_numbers(prune_spec, path, found)
    undefined_enums(prune_spec, path, found)
    prune_violations(prune_spec, path, found)
    build = _PRUNE.get(method_name(prune_spec.method))
    if build is None and not found:
        found.append(
            FieldViolation(f"{path}.method", f"pruning method {prune_spec.method} is not implemented")
        )
    if found or build is None:
        raise SpecRuleError(found)
    try:
        return build(prune_spec)
    except ValueError as exc:
        raise SpecRuleError([FieldViolation(path, str(exc))]) from None


_CALIBRATIONS: dict[int, Any] = {
    _P.CALIBRATION_METHOD_MINMAX: "minmax",
    _P.CALIBRATION_METHOD_ENTROPY: "entropy",
    _P.CALIBRATION_METHOD_PERCENTILE: "percentile",
}

_QUANTIZE: dict[int, Callable[[spec_pb2.QuantizeSpec], QuantizeConfig]] = {
    _P.QUANTIZE_MODE_STATIC_INT8: lambda q: StaticInt8Config(
        calibration=_CALIBRATIONS.get(q.calibration, "minmax"),
        calibration_samples=q.calibration_samples or DEFAULT_CALIBRATION_SAMPLES,
        percentile=q.percentile or DEFAULT_PERCENTILE,
        exclude=tuple(q.exclude),
    ),
    _P.QUANTIZE_MODE_DYNAMIC_INT8: lambda q: DynamicInt8Config(exclude=tuple(q.exclude)),
    _P.QUANTIZE_MODE_FP16: lambda q: Fp16Config(exclude=tuple(q.exclude)),
}
"""``QuantizeMode`` value -> the translation of a ``QuantizeSpec`` into that mode's config."""


def quantize_config(q: spec_pb2.QuantizeSpec, mode: int, *, path: str = "spec.quantize") -> QuantizeConfig:
    """The config of ``mode`` with the options of ``q``.

    Raises :class:`SpecRuleError` for a mode with no config (AUTO, NONE) and for values the config refuses.
    """
    build = _QUANTIZE.get(mode)
    if build is None:
        raise SpecRuleError([FieldViolation(f"{path}.mode", f"quantization mode {mode} is not implemented")])
    try:
        return build(q)
    except ValueError as exc:
        raise SpecRuleError([FieldViolation(path, str(exc))]) from None


def _aware(q: spec_pb2.QuantizeSpec, path: str) -> AwareTrainingConfig | None:
    if not q.HasField("aware_training"):
        return None
    a = q.aware_training
    try:
        return AwareTrainingConfig(
            steps=a.steps,
            lr=a.learning_rate or DEFAULT_AWARE_LR,
            batch_size=a.batch_size or DEFAULT_AWARE_BATCH,
        )
    except ValueError as exc:
        raise SpecRuleError([FieldViolation(f"{path}.aware_training", str(exc))]) from None


def quantize_plan(q: spec_pb2.QuantizeSpec, *, path: str = "spec.quantize") -> QuantizePlan:
    """The configs ``q`` asks for: none for NONE (or no mode), one for a mode, every candidate for AUTO.

    AUTO's candidates are ``q.candidates``, or every concrete mode; ``aware`` holds ``aware_training``.
    Raises :class:`SpecRuleError` as :func:`quantize_config` does.
    """
    if q.mode in (_P.QUANTIZE_MODE_UNSPECIFIED, _P.QUANTIZE_MODE_NONE):
        return QuantizePlan(configs=())
    if q.mode != _P.QUANTIZE_MODE_AUTO:
        return QuantizePlan(configs=(quantize_config(q, q.mode, path=path),), aware=_aware(q, path))
    modes = list(q.candidates) or list(AUTO_CANDIDATES)
    return QuantizePlan(configs=tuple(quantize_config(q, m, path=path) for m in modes), auto=True)


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
    """The plan of a ``FinetuneSpec`` with the proto's defaults applied; ``SpecRuleError`` for a bad value."""
    optimizer = _OPTIMIZERS[spec.optimizer]
    lr = spec.learning_rate or (1e-2 if optimizer == "sgd" else 1e-3)
    distill = spec.HasField("distillation")
    d = spec.distillation
    try:
        config = FinetuneConfig(
            epochs=spec.epochs,
            steps=spec.steps,
            max_seconds=spec.max_seconds,
            batch_size=spec.batch_size or DEFAULT_BATCH_SIZE,
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
        raise SpecRuleError([FieldViolation("spec.finetune", str(exc))]) from None
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
