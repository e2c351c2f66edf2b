"""ATTENTION_HEAD configuration: :class:`HeadConfig` and its ``PruneSpec`` factory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from prunekit.v1 import spec_pb2

from ...errors import FieldViolation, invalid_spec
from ...technique_config import check_patterns
from .. import spec_fields
from ..base import PruneConfig, register_spec_method

HeadImportance = Literal["l1", "l2", "taylor", "activation", "random"]
Scope = Literal["global", "per_layer"]
_IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor", "activation", "random")
_DATA_DRIVEN = ("taylor", "activation")


@dataclass(frozen=True)
class HeadConfig(PruneConfig):
    """Remove attention heads. Bad values raise ``ValueError``."""

    method = "attention_head"

    ratio: float = field(
        default=0.0,
        metadata={
            "description": "Fraction of each attention's heads to remove, 0 < ratio < 1 "
            "(0 with a MACs target)."
        },
    )
    importance: HeadImportance = field(
        default="l1",
        metadata={"description": "How heads are ranked: l1, l2, taylor, activation or random."},
    )
    scope: Scope = field(
        default="per_layer",
        metadata={
            "description": "'per_layer': ratio of each attention's heads; 'global': of all heads, ranked "
            "together (scores normalised per attention)."
        },
    )
    target_macs_reduction: float = field(
        default=0.0,
        metadata={
            "description": "Remove heads until the model's MACs are divided by this (> 1); 0 uses ratio."
        },
    )
    max_layer_ratio: float = field(
        default=0.9, metadata={"description": "No attention loses more than this fraction of its heads."}
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs on module paths, ONNX node and weight names: "
            "matching attentions stay."
        },
    )
    overrides: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={"description": "(pattern, ratio) pairs: attentions matching a pattern use its ratio."},
    )
    steps: int = field(
        default=1, metadata={"description": "Rounds of pruning, with the recovery hook between them."}
    )
    prune_output_layers: bool = field(
        default=False,
        metadata={"description": "Also prune an attention whose output projection is an output layer."},
    )
    seed: int = field(default=0, metadata={"description": "Seed of the RANDOM criterion."})

    def __post_init__(self) -> None:
        _check_common(self.ratio, self.target_macs_reduction, self.max_layer_ratio, self.steps)
        if self.importance not in _IMPORTANCES:
            raise ValueError(f"importance must be one of {', '.join(_IMPORTANCES)}, got {self.importance!r}")
        if self.scope not in ("global", "per_layer"):
            raise ValueError(f"scope must be 'global' or 'per_layer', got {self.scope!r}")
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))
        object.__setattr__(self, "overrides", _overrides(self.overrides))


def _check_common(ratio: float, macs: float, max_layer_ratio: float, steps: int) -> None:
    if (ratio == 0) == (macs == 0):
        raise ValueError("set exactly one of ratio and target_macs_reduction")
    if ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
        raise ValueError(f"ratio must satisfy 0 < ratio < 1, got {ratio!r}")
    if macs and not (math.isfinite(macs) and macs > 1.0):
        raise ValueError(f"target_macs_reduction must be > 1, got {macs!r}")
    if not (math.isfinite(max_layer_ratio) and 0.0 < max_layer_ratio < 1.0):
        raise ValueError(f"max_layer_ratio must satisfy 0 < x < 1, got {max_layer_ratio!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
        raise ValueError(f"steps must be an integer from 1 to 100, got {steps!r}")


def _overrides(value: Any) -> tuple[tuple[str, float], ...]:
    out: list[tuple[str, float]] = []
    for item in value:
        pattern, ratio = item
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("override patterns must be non-empty strings")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 < ratio < 1.0:
            raise ValueError(f"override ratio must satisfy 0 < ratio < 1, got {ratio!r}")
        out.append((pattern, float(ratio)))
    return tuple(out)


@register_spec_method(spec_pb2.PRUNE_METHOD_ATTENTION_HEAD)
def heads_from_spec(prune_spec: spec_pb2.PruneSpec) -> HeadConfig:
    """The config for an ATTENTION_HEAD ``PruneSpec``; ``INVALID_SPEC`` listing every bad field.

    ``scope`` unset means per layer for this method (heads are counted per attention).
    """
    found: list[FieldViolation] = []
    ratio, macs = spec_fields.target(prune_spec, found)
    importance = spec_fields.importance(prune_spec, "l1", _IMPORTANCES, found)
    scope = spec_fields.scope(prune_spec, "per_layer", found)
    cap = spec_fields.max_layer_ratio(prune_spec, found)
    steps = spec_fields.steps(prune_spec, found)
    ignore, overrides = spec_fields.ignore_and_overrides(prune_spec, found, ratios=True)
    spec_fields.reject_unused(prune_spec, ("round_to", "n", "m", "auto_ratios"), "ATTENTION_HEAD", found)
    if found:
        raise invalid_spec(found)
    return HeadConfig(
        ratio=ratio,
        importance=importance,  # type: ignore[arg-type]
        scope=scope,  # type: ignore[arg-type]
        target_macs_reduction=macs,
        max_layer_ratio=cap,
        ignore=ignore,
        overrides=overrides,
        steps=steps,
        prune_output_layers=prune_spec.prune_output_layers,
    )
