"""The options CHANNEL and NEURON share: targets, ranking, rounding, caps, ignores, schedule.

:class:`StructuredConfig` is the frozen dataclass both methods' configs extend;
:func:`structured_fields` reads a ``PruneSpec`` into its keyword arguments,
collecting every violation (see :mod:`..spec_fields`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from prunekit.v1 import spec_pb2

from ...errors import FieldViolation
from ...technique_config import check_patterns
from .. import spec_fields
from ..base import PruneConfig

Scope = Literal["global", "per_layer"]
Schedule = Literal["one_shot", "iterative"]
DEFAULT_ROUND_TO = 8
MAX_ROUND_TO = 1024
DEFAULT_MAX_LAYER_RATIO = 0.9
DEFAULT_STEPS = 5
MAX_STEPS = 100
MAX_MACS_REDUCTION = 100.0
DATA_DRIVEN = frozenset({"taylor", "activation"})


@dataclass(frozen=True)
class StructuredConfig(PruneConfig):
    """Options of the structured methods that remove whole channels. Bad values raise ``ValueError``.

    Exactly one of ``ratio`` and ``target_macs_reduction`` is set. Subclasses
    set ``method`` and ``importances`` (the criteria they accept).
    """

    importances: ClassVar[tuple[str, ...]] = ()

    ratio: float = field(
        default=0.0,
        metadata={
            "description": "Fraction of the eligible channels to remove, 0 < ratio < 1 (before rounding); "
            "0 when target_macs_reduction is set."
        },
    )
    target_macs_reduction: float = field(
        default=0.0,
        metadata={
            "description": "Prune until the model's MACs are divided by this (1 < x <= 100), within 5 %; "
            "0 when ratio is set."
        },
    )
    scope: Scope = field(
        default="global",
        metadata={
            "description": "'global': channels of all groups ranked together (scores normalised per "
            "group); 'per_layer': the ratio of each group."
        },
    )
    importance: str = field(
        default="l1",
        metadata={
            "description": "How channels are ranked: l1, l2, taylor, bn_scale, fpgm, activation or random "
            "(the method's subset)."
        },
    )
    round_to: int = field(
        default=DEFAULT_ROUND_TO,
        metadata={"description": f"Kept widths are multiples of this (1 disables), 1 to {MAX_ROUND_TO}."},
    )
    max_layer_ratio: float = field(
        default=DEFAULT_MAX_LAYER_RATIO,
        metadata={"description": "No group loses more than this fraction of its original width, 0 < x < 1."},
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs on module paths and ONNX node and weight names: a matching "
            "layer keeps its output channels (its inputs follow the layer before it), and so does its group."
        },
    )
    overrides: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={
            "description": "(pattern, ratio) pairs: a group with a matching layer is pruned by that ratio "
            "on its own (0: the run's ratio), not ranked with the others; the first matching pattern wins."
        },
    )
    steps: int = field(
        default=1,
        metadata={
            "description": f"Rounds of pruning (1 = one shot, up to {MAX_STEPS}); the context's recovery "
            "hook runs between rounds."
        },
    )
    prune_output_layers: bool = field(
        default=False,
        metadata={"description": "Also prune layers that produce a graph output (output shapes change)."},
    )
    auto_ratios: bool = field(
        default=False,
        metadata={
            "description": "Per-group ratios from a sensitivity analysis (least sensitive pruned most), "
            "keeping the overall target."
        },
    )
    seed: int = field(default=0, metadata={"description": "Seed of the RANDOM criterion."})

    def __post_init__(self) -> None:
        ratio, macs = self.ratio, self.target_macs_reduction
        if (ratio == 0) == (macs == 0):
            raise ValueError("set exactly one of ratio and target_macs_reduction")
        if ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
            raise ValueError(f"ratio must satisfy 0 < ratio < 1, got {ratio!r}")
        if macs and not (math.isfinite(macs) and 1.0 < macs <= MAX_MACS_REDUCTION):
            raise ValueError(
                f"target_macs_reduction must satisfy 1 < x <= {MAX_MACS_REDUCTION:g}, got {macs!r}"
            )
        if self.scope not in ("global", "per_layer"):
            raise ValueError(f"scope must be 'global' or 'per_layer', got {self.scope!r}")
        if self.importance not in self.importances:
            raise ValueError(
                f"importance must be one of {', '.join(self.importances)}, got {self.importance!r}"
            )
        _integer("round_to", self.round_to, 1, MAX_ROUND_TO)
        _integer("steps", self.steps, 1, MAX_STEPS)
        cap = self.max_layer_ratio
        if not (math.isfinite(cap) and 0.0 < cap < 1.0):
            raise ValueError(f"max_layer_ratio must satisfy 0 < x < 1, got {cap!r}")
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))
        object.__setattr__(self, "overrides", _overrides(self.overrides))

    @property
    def data_driven(self) -> bool:
        """Whether the importance criterion runs the model on the context's feeds."""
        return self.importance in DATA_DRIVEN


def _integer(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _overrides(value: Any) -> tuple[tuple[str, float], ...]:
    if isinstance(value, str):
        raise ValueError("overrides must be a sequence of (pattern, ratio) pairs")
    out: list[tuple[str, float]] = []
    for item in value:
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"an override is a (pattern, ratio) pair, got {item!r}")
        pattern, ratio = item
        if not isinstance(pattern, str) or not pattern:
            raise ValueError("override patterns must be non-empty strings")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise ValueError(f"override ratio must be a number, got {ratio!r}")
        if not (math.isfinite(ratio) and 0.0 <= ratio < 1.0):
            raise ValueError(f"override ratio must satisfy 0 <= ratio < 1, got {ratio!r}")
        out.append((pattern, float(ratio)))
    return tuple(out)


def _ignore_and_overrides(
    prune_spec: spec_pb2.PruneSpec, found: list[FieldViolation]
) -> tuple[tuple[str, ...], tuple[tuple[str, float], ...]]:
    """``ignore: true`` overrides join the ignore globs; the others keep their ratio (0: the spec's)."""
    path = spec_fields.PATH
    ignore = list(prune_spec.ignore)
    if any(not p for p in ignore):
        found.append(FieldViolation(f"{path}.ignore", "patterns must not be empty"))
    overrides: list[tuple[str, float]] = []
    for i, override in enumerate(prune_spec.overrides):
        here = f"{path}.overrides[{i}]"
        ratio = override.ratio
        if not override.pattern:
            found.append(FieldViolation(f"{here}.pattern", "must not be empty"))
        elif override.ignore and ratio:
            found.append(FieldViolation(f"{here}.ratio", "set ratio or ignore, not both"))
        elif override.ignore:
            ignore.append(override.pattern)
        elif not (math.isfinite(ratio) and 0.0 <= ratio < 1.0):
            found.append(FieldViolation(f"{here}.ratio", f"must be 0 <= ratio < 1, got {ratio!r}"))
        else:
            overrides.append((override.pattern, ratio))
    return tuple(ignore), tuple(overrides)


def structured_fields(
    prune_spec: spec_pb2.PruneSpec, importances: tuple[str, ...], found: list[FieldViolation]
) -> dict[str, Any]:
    """The :class:`StructuredConfig` keyword arguments a ``PruneSpec`` sets; violations go to ``found``."""
    ratio, macs = spec_fields.target(prune_spec, found)
    if macs > MAX_MACS_REDUCTION:
        found.append(
            FieldViolation(f"{spec_fields.PATH}.target_macs_reduction", f"at most {MAX_MACS_REDUCTION:g}")
        )
    round_to = prune_spec.round_to or DEFAULT_ROUND_TO
    if not 1 <= round_to <= MAX_ROUND_TO:
        found.append(
            FieldViolation(f"{spec_fields.PATH}.round_to", f"must be 0 (8) or between 1 and {MAX_ROUND_TO}")
        )
        round_to = DEFAULT_ROUND_TO
    ignore, overrides = _ignore_and_overrides(prune_spec, found)
    spec_fields.reject_unused(prune_spec, ("n", "m"), spec_pb2.PruneMethod.Name(prune_spec.method), found)
    return {
        "ratio": ratio,
        "target_macs_reduction": macs,
        "scope": spec_fields.scope(prune_spec, "global", found),
        "importance": spec_fields.importance(prune_spec, "l1", importances, found),
        "round_to": round_to,
        "max_layer_ratio": spec_fields.max_layer_ratio(prune_spec, found),
        "ignore": ignore,
        "overrides": overrides,
        "steps": spec_fields.steps(prune_spec, found),
        "prune_output_layers": prune_spec.prune_output_layers,
        "auto_ratios": prune_spec.auto_ratios,
    }
