"""Reading the common ``PruneSpec`` fields into config values, with every violation listed.

A method's spec factory uses these helpers for the fields it supports and
:func:`reject_unused` for the ones it does not, so a spec never sets a field
that is silently ignored.
"""

from __future__ import annotations

import math

from prunekit.v1 import spec_pb2

from ..errors import FieldViolation

PATH = "spec.prune"

IMPORTANCE_NAMES: dict[int, str] = {
    spec_pb2.IMPORTANCE_L1: "l1",
    spec_pb2.IMPORTANCE_L2: "l2",
    spec_pb2.IMPORTANCE_TAYLOR: "taylor",
    spec_pb2.IMPORTANCE_BN_SCALE: "bn_scale",
    spec_pb2.IMPORTANCE_FPGM: "fpgm",
    spec_pb2.IMPORTANCE_ACTIVATION: "activation",
    spec_pb2.IMPORTANCE_RANDOM: "random",
}


def importance(
    prune_spec: spec_pb2.PruneSpec, default: str, allowed: tuple[str, ...], found: list[FieldViolation]
) -> str:
    """The importance criterion's name (``default`` when unset); a violation when it is not ``allowed``."""
    if prune_spec.importance == spec_pb2.IMPORTANCE_UNSPECIFIED:
        return default
    name = IMPORTANCE_NAMES.get(prune_spec.importance, "")
    if name not in allowed:
        label = spec_pb2.Importance.Name(prune_spec.importance) if name else str(prune_spec.importance)
        found.append(
            FieldViolation(
                f"{PATH}.importance", f"{label} is not available here; use one of {', '.join(allowed)}"
            )
        )
        return default
    return name


def scope(prune_spec: spec_pb2.PruneSpec, default: str, found: list[FieldViolation]) -> str:
    """``"global"`` or ``"per_layer"`` (``default`` when unset)."""
    names = {spec_pb2.PRUNE_SCOPE_GLOBAL: "global", spec_pb2.PRUNE_SCOPE_PER_LAYER: "per_layer"}
    if prune_spec.scope == spec_pb2.PRUNE_SCOPE_UNSPECIFIED:
        return default
    if prune_spec.scope not in names:
        found.append(FieldViolation(f"{PATH}.scope", f"unknown scope {prune_spec.scope}"))
        return default
    return names[prune_spec.scope]


def target(prune_spec: spec_pb2.PruneSpec, found: list[FieldViolation]) -> tuple[float, float]:
    """``(ratio, target_macs_reduction)``: exactly one set, ratio in (0, 1), target > 1."""
    ratio, macs = prune_spec.ratio, prune_spec.target_macs_reduction
    if ratio and macs:
        found.append(
            FieldViolation(f"{PATH}.target_macs_reduction", "set ratio or target_macs_reduction, not both")
        )
    elif not ratio and not macs:
        found.append(
            FieldViolation(f"{PATH}.ratio", "set ratio (0 < ratio < 1) or target_macs_reduction (> 1)")
        )
    if ratio and (not math.isfinite(ratio) or not 0.0 < ratio < 1.0):
        found.append(FieldViolation(f"{PATH}.ratio", f"must be a number with 0 < ratio < 1, got {ratio!r}"))
    if macs and (not math.isfinite(macs) or macs <= 1.0):
        found.append(FieldViolation(f"{PATH}.target_macs_reduction", f"must be greater than 1, got {macs!r}"))
    return ratio, macs


def max_layer_ratio(prune_spec: spec_pb2.PruneSpec, found: list[FieldViolation]) -> float:
    """The cap on any one layer's pruned fraction; 0 means 0.9."""
    value = prune_spec.max_layer_ratio or 0.9
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        found.append(
            FieldViolation(f"{PATH}.max_layer_ratio", f"must be 0 (0.9) or 0 < x < 1, got {value!r}")
        )
        return 0.9
    return value


def steps(prune_spec: spec_pb2.PruneSpec, found: list[FieldViolation]) -> int:
    """Rounds of pruning: 1 for ONE_SHOT, ``steps`` (0 means 5) for ITERATIVE."""
    if prune_spec.schedule == spec_pb2.PRUNE_SCHEDULE_ITERATIVE:
        count = prune_spec.steps or 5
        if not 1 <= count <= 100:
            found.append(FieldViolation(f"{PATH}.steps", "must be 0 (5) or between 1 and 100"))
            return 5
        return count
    if prune_spec.steps:
        found.append(FieldViolation(f"{PATH}.steps", "only with schedule ITERATIVE"))
    return 1


def ignore_and_overrides(
    prune_spec: spec_pb2.PruneSpec, found: list[FieldViolation], *, ratios: bool
) -> tuple[tuple[str, ...], tuple[tuple[str, float], ...]]:
    """``(ignore patterns, (pattern, ratio) overrides)``; ``ignore: true`` overrides join the ignore list.

    With ``ratios=False`` an override that sets a ratio is a violation.
    """
    ignore = list(prune_spec.ignore)
    if any(not p for p in ignore):
        found.append(FieldViolation(f"{PATH}.ignore", "patterns must not be empty"))
    overrides: list[tuple[str, float]] = []
    for i, override in enumerate(prune_spec.overrides):
        here = f"{PATH}.overrides[{i}]"
        if not override.pattern:
            found.append(FieldViolation(f"{here}.pattern", "must not be empty"))
            continue
        if override.ignore:
            if override.ratio:
                found.append(FieldViolation(f"{here}.ratio", "set ratio or ignore, not both"))
            ignore.append(override.pattern)
        elif not ratios:
            found.append(
                FieldViolation(here, "this method's overrides may only ignore layers (ignore: true)")
            )
        elif not math.isfinite(override.ratio) or not 0.0 < override.ratio < 1.0:
            found.append(FieldViolation(f"{here}.ratio", f"must be 0 < ratio < 1, got {override.ratio!r}"))
        else:
            overrides.append((override.pattern, override.ratio))
    return tuple(ignore), tuple(overrides)


def reject_unused(
    prune_spec: spec_pb2.PruneSpec, names: tuple[str, ...], method: str, found: list[FieldViolation]
) -> None:
    """A violation for each of ``names`` the spec sets: fields ``method`` does not use."""
    for name in names:
        if getattr(prune_spec, name):
            found.append(FieldViolation(f"{PATH}.{name}", f"not used by {method}"))
