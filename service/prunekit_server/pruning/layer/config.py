"""LAYER configuration: :class:`LayerConfig` and its ``PruneSpec`` factory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from prunekit.v1 import spec_pb2

from ...errors import FieldViolation, invalid_spec
from ...technique_config import check_patterns
from .. import spec_fields
from ..base import PruneConfig, register_spec_method

LayerImportance = Literal["l1", "l2", "taylor", "activation", "random", "sensitivity"]
_IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor", "activation", "random", "sensitivity")
_DATA_DRIVEN = ("taylor", "activation", "sensitivity")


@dataclass(frozen=True)
class LayerConfig(PruneConfig):
    """Remove residual blocks or identity-shaped layers. Bad values raise ``ValueError``."""

    method = "layer"

    ratio: float = field(
        default=0.0,
        metadata={
            "description": "Fraction of the removable units to remove, 0 < ratio < 1 (0 with a MACs target)."
        },
    )
    target_macs_reduction: float = field(
        default=0.0,
        metadata={
            "description": "Remove units until the model's MACs are divided by this (> 1); 0 uses ratio."
        },
    )
    importance: LayerImportance = field(
        default="l2",
        metadata={"description": "How units are ranked: l2, l1, taylor, activation, random or sensitivity."},
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs on module paths, ONNX node and weight names and unit names: "
            "units containing a match stay."
        },
    )
    prune_output_layers: bool = field(
        default=False, metadata={"description": "Allow units that contain an output layer."}
    )
    seed: int = field(default=0, metadata={"description": "Seed of the RANDOM criterion."})

    def __post_init__(self) -> None:
        ratio, macs = self.ratio, self.target_macs_reduction
        if (ratio == 0) == (macs == 0):
            raise ValueError("set exactly one of ratio and target_macs_reduction")
        if ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
            raise ValueError(f"ratio must satisfy 0 < ratio < 1, got {ratio!r}")
        if macs and not (math.isfinite(macs) and macs > 1.0):
            raise ValueError(f"target_macs_reduction must be > 1, got {macs!r}")
        if self.importance not in _IMPORTANCES:
            raise ValueError(f"importance must be one of {', '.join(_IMPORTANCES)}, got {self.importance!r}")
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))


@register_spec_method(spec_pb2.PRUNE_METHOD_LAYER)
def layer_from_spec(prune_spec: spec_pb2.PruneSpec) -> LayerConfig:
    """The config for a LAYER ``PruneSpec``; ``INVALID_SPEC`` listing every bad field.

    ``auto_ratios`` ranks the units by measured sensitivity (it cannot be
    combined with ``importance``); overrides may only ignore.
    """
    found: list[FieldViolation] = []
    ratio, macs = spec_fields.target(prune_spec, found)
    importance = spec_fields.importance(
        prune_spec, "l2", ("l1", "l2", "taylor", "activation", "random"), found
    )
    if prune_spec.auto_ratios:
        if prune_spec.importance != spec_pb2.IMPORTANCE_UNSPECIFIED:
            found.append(
                FieldViolation("spec.prune.auto_ratios", "ranks by sensitivity: leave importance unset")
            )
        importance = "sensitivity"
    ignore, _ = spec_fields.ignore_and_overrides(prune_spec, found, ratios=False)
    unused = ("scope", "round_to", "max_layer_ratio", "schedule", "steps", "n", "m")
    spec_fields.reject_unused(prune_spec, unused, "LAYER", found)
    if found:
        raise invalid_spec(found)
    return LayerConfig(
        ratio=ratio,
        target_macs_reduction=macs,
        importance=importance,  # type: ignore[arg-type]
        ignore=ignore,
        prune_output_layers=prune_spec.prune_output_layers,
    )
