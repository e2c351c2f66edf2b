"""The rules a ``PruneSpec`` must follow, per method (see :mod:`.methods` for what each method reads).

* ``ratio`` and ``target_macs_reduction``: the methods that remove structure (CHANNEL, NEURON, LAYER,
  ATTENTION_HEAD) take exactly one of them, ratio in (0, 1), target in (1, 100]; UNSTRUCTURED needs a
  ratio; N_M takes none (or ``1 - n/m``); LOW_RANK exactly one of them or ``low_rank.energy`` (0 < e < 1);
  DYNAMIC none, its ``dynamic`` section instead (:mod:`.dynamic_configs`).
* ``round_to`` 0 to 1024, ``max_layer_ratio`` 0 or in (0, 1), ``steps`` 0 to 100 and only with an
  ITERATIVE schedule, ``n``/``m`` (N_M only) with ``0 < n < m <= 64`` (0 meaning 2 and 4).
* ``overrides``: at most 256, each with a pattern (1 to 256 printable characters) and either a ratio or
  ``ignore``; CHANNEL and NEURON read ratio 0 as the spec's ratio applied per layer, ATTENTION_HEAD needs
  a ratio above 0, the other methods' overrides may only ignore.
* ``importance`` must be one the method uses; a field the method does not read must be left unset.
"""

from __future__ import annotations

from prunekit.v1 import spec_pb2

from .dynamic_configs import dynamic_violations
from .low_rank_configs import low_rank_goal_problem
from .methods import METHODS, Method, importance_problem
from .names import enum_short_name
from .structured_configs import MAX_ROUND_TO, MAX_STEPS
from .values import (
    fraction_problem,
    int_range_problem,
    n_m_problems,
    override_ratio_problem,
    pattern_problem,
    ratio_problem,
    target_problem,
    targets_problem,
)
from .violation import FieldViolation, pattern_violations

__all__ = ["MAX_OVERRIDES", "method_name", "prune_violations"]

MAX_OVERRIDES = 256
_P = spec_pb2


def method_name(method: int) -> str:
    """The short name of a ``PruneMethod`` value (``channel``); the number as text when it has none."""
    return enum_short_name(_P.PruneMethod.DESCRIPTOR, method)


def _label(method: int) -> str:
    known = method in _P.PruneMethod.values()
    return _P.PruneMethod.Name(_P.PruneMethod.ValueType(method)) if known else str(method)


def _is_set(prune: spec_pb2.PruneSpec, name: str) -> bool:
    if name == "low_rank":
        return prune.HasField("low_rank")
    if name == "dynamic":
        return prune.HasField("dynamic")
    value = getattr(prune, name)
    return bool(len(value)) if name in ("ignore", "overrides") else bool(value)


def prune_violations(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    """Append every rule ``prune`` breaks (see the module doc) to ``found``."""
    rules = METHODS.get(method_name(prune.method)) if prune.method else None
    if prune.method == _P.PRUNE_METHOD_UNSPECIFIED:
        found.append(FieldViolation(f"{path}.method", "required (e.g. UNSTRUCTURED or CHANNEL)"))
    if rules is not None:
        for field in sorted(set(_P.PruneSpec.DESCRIPTOR.fields_by_name) - rules.fields):
            if _is_set(prune, field):
                found.append(FieldViolation(f"{path}.{field}", f"not used by {_label(prune.method)}"))
    _targets(prune, rules, path, found)
    _ranges(prune, path, found)
    pattern_violations(list(prune.ignore), f"{path}.ignore", found)
    _overrides(prune, rules, path, found)
    if rules is not None and "importance" in rules.fields:
        _importance(prune, rules, path, found)


def _targets(prune: spec_pb2.PruneSpec, rules: Method | None, path: str, found: list[FieldViolation]) -> None:
    ratio, macs = prune.ratio, prune.target_macs_reduction
    problem = ratio_problem(ratio) if ratio else None
    if problem:
        found.append(FieldViolation(f"{path}.ratio", problem))
    problem = target_problem(macs) if macs else None
    if problem:
        found.append(FieldViolation(f"{path}.target_macs_reduction", problem))
    if rules is not None and rules.structural:
        choice = targets_problem(ratio, macs)
        if choice:
            found.append(FieldViolation(f"{path}.{choice[0]}", choice[1]))
    elif prune.method == _P.PRUNE_METHOD_LOW_RANK:
        _low_rank(prune, path, found)
    elif prune.method == _P.PRUNE_METHOD_DYNAMIC:
        dynamic_violations(prune, path, found)
    elif prune.method != _P.PRUNE_METHOD_N_M and not ratio:
        found.append(FieldViolation(f"{path}.ratio", str(ratio_problem(ratio))))
    if prune.method == _P.PRUNE_METHOD_N_M:
        n, m = prune.n or 2, prune.m or 4
        group = n_m_problems(n, m)
        if group:
            found.append(FieldViolation(f"{path}.{group[0]}", group[1]))
        elif ratio and abs(ratio - (1.0 - n / m)) > 1e-9:
            found.append(
                FieldViolation(
                    f"{path}.ratio", f"N_M zeroes exactly 1 - n/m = {1.0 - n / m:g}: leave ratio 0"
                )
            )


def _low_rank(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    energy = prune.low_rank.energy
    problem = fraction_problem(energy, "energy") if energy else None
    if problem:
        found.append(FieldViolation(f"{path}.low_rank.energy", problem))
    choice = low_rank_goal_problem(prune.ratio, prune.target_macs_reduction, energy)
    if choice:
        found.append(FieldViolation(f"{path}.{choice[0]}", choice[1]))


def _ranges(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    problem = int_range_problem(prune.round_to, 1, MAX_ROUND_TO) if prune.round_to else None
    if problem:
        found.append(FieldViolation(f"{path}.round_to", f"{problem} (0: 8)"))
    cap = prune.max_layer_ratio
    problem = fraction_problem(cap, "max_layer_ratio") if cap else None
    if problem:
        found.append(FieldViolation(f"{path}.max_layer_ratio", f"{problem} (0: 0.9)"))
    problem = int_range_problem(prune.steps, 1, MAX_STEPS) if prune.steps else None
    if problem:
        found.append(FieldViolation(f"{path}.steps", f"{problem} (0: 5)"))
    elif prune.steps and prune.schedule != _P.PRUNE_SCHEDULE_ITERATIVE:
        found.append(FieldViolation(f"{path}.steps", "only with schedule ITERATIVE"))


def _overrides(
    prune: spec_pb2.PruneSpec, rules: Method | None, path: str, found: list[FieldViolation]
) -> None:
    items = list(prune.overrides)
    if len(items) > MAX_OVERRIDES:
        found.append(FieldViolation(f"{path}.overrides", f"at most {MAX_OVERRIDES} overrides"))
    zero_allowed = rules is not None and rules.zero_override
    for i, override in enumerate(items):
        here = f"{path}.overrides[{i}]"
        problem = pattern_problem(override.pattern)
        if problem:
            found.append(FieldViolation(f"{here}.pattern", problem))
        ratio = override.ratio
        problem = override_ratio_problem(ratio, zero_allowed=zero_allowed) if ratio else None
        if override.ignore and ratio:
            found.append(FieldViolation(f"{here}.ratio", "set ratio or ignore, not both"))
        elif problem:
            found.append(FieldViolation(f"{here}.ratio", problem))
        elif override.ignore or rules is None:
            continue
        elif not rules.override_ratios:
            found.append(FieldViolation(here, f"{_label(prune.method)} overrides may only ignore layers"))
        elif not ratio and not zero_allowed:
            found.append(FieldViolation(f"{here}.ratio", "set a ratio (0 < ratio < 1) or ignore: true"))


def _importance(prune: spec_pb2.PruneSpec, rules: Method, path: str, found: list[FieldViolation]) -> None:
    importance = prune.importance
    if importance != _P.IMPORTANCE_UNSPECIFIED and importance in _P.Importance.values():
        name = enum_short_name(_P.Importance.DESCRIPTOR, importance)
        problem = importance_problem(method_name(prune.method), name, rules.importances)
        if problem:
            found.append(FieldViolation(f"{path}.importance", problem))
    calibrated = importance in (_P.IMPORTANCE_WANDA, _P.IMPORTANCE_SPARSEGPT)
    if calibrated and prune.scope == _P.PRUNE_SCOPE_GLOBAL and prune.method == _P.PRUNE_METHOD_UNSTRUCTURED:
        found.append(
            FieldViolation(
                f"{path}.scope", "WANDA and SPARSEGPT compare weights within each layer: leave scope unset"
            )
        )
    if prune.method == _P.PRUNE_METHOD_LAYER and prune.auto_ratios and importance:
        found.append(FieldViolation(f"{path}.auto_ratios", "ranks by sensitivity: leave importance unset"))
