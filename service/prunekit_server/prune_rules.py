"""The rules a ``PruneSpec`` must follow, per method, checked before a job is accepted.

Part of :mod:`.spec_rules` (it runs in the server process: the spec only,
never torch or the model). Every violation is listed. The table below says
which fields each method reads; a field a method does not read is a
violation rather than silently ignored. The methods' own spec factories
(``pruning/``) apply the same rules again in the worker.

* ``ratio`` and ``target_macs_reduction``: the methods that remove structure
  (CHANNEL, NEURON, LAYER, ATTENTION_HEAD) take exactly one of them, ratio in
  (0, 1), target in (1, 100]; UNSTRUCTURED needs a ratio; N_M takes none (or
  ``1 - n/m``).
* ``round_to`` 0 to 1024, ``max_layer_ratio`` in [0, 1), ``steps`` 0 to 100
  and only with an ITERATIVE schedule, ``n``/``m`` (N_M only) with
  ``0 < n < m <= 64`` (0 meaning 2 and 4).
* ``overrides``: at most 256, each with a pattern (1 to 256 printable
  characters) and either a ratio in [0, 1) or ``ignore``; CHANNEL and NEURON
  read ratio 0 as the spec's ratio applied per layer, ATTENTION_HEAD needs a
  ratio above 0, the other methods' overrides may only ignore.
* ``importance`` must be one the method uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prunekit.v1 import spec_pb2

from .errors import FieldViolation

MAX_PATTERNS = 256
MAX_PATTERN_LENGTH = 256
MAX_OVERRIDES = 256
MAX_ROUND_TO = 1024
MAX_STEPS = 100
MAX_MACS_REDUCTION = 100.0
MAX_M = 64

_M = spec_pb2
_STRUCTURAL = frozenset(
    {_M.PRUNE_METHOD_CHANNEL, _M.PRUNE_METHOD_NEURON, _M.PRUNE_METHOD_LAYER, _M.PRUNE_METHOD_ATTENTION_HEAD}
)
_MAGNITUDE = frozenset({_M.IMPORTANCE_L1, _M.IMPORTANCE_L2})
_RANKED = frozenset({_M.IMPORTANCE_L1, _M.IMPORTANCE_L2, _M.IMPORTANCE_TAYLOR, _M.IMPORTANCE_ACTIVATION})
IMPORTANCES: dict[int, frozenset[int]] = {
    _M.PRUNE_METHOD_UNSTRUCTURED: _MAGNITUDE,
    _M.PRUNE_METHOD_N_M: _MAGNITUDE,
    _M.PRUNE_METHOD_CHANNEL: frozenset(_M.Importance.values()) - {_M.IMPORTANCE_UNSPECIFIED},
    _M.PRUNE_METHOD_NEURON: _RANKED | {_M.IMPORTANCE_FPGM, _M.IMPORTANCE_RANDOM},
    _M.PRUNE_METHOD_LAYER: _RANKED | {_M.IMPORTANCE_RANDOM},
    _M.PRUNE_METHOD_ATTENTION_HEAD: _RANKED | {_M.IMPORTANCE_RANDOM},
}
"""The importance criteria each method ranks by (unset is always allowed: the method's default)."""

_SHARED = frozenset({"method", "ignore", "overrides", "prune_output_layers", "importance"})
FIELDS: dict[int, frozenset[str]] = {
    _M.PRUNE_METHOD_UNSTRUCTURED: frozenset({"method", "ratio", "scope", "ignore", "importance"}),
    _M.PRUNE_METHOD_N_M: _SHARED | {"ratio", "n", "m"},
    _M.PRUNE_METHOD_CHANNEL: _SHARED
    | {"ratio", "target_macs_reduction", "scope", "round_to", "max_layer_ratio", "schedule", "steps"}
    | {"auto_ratios"},
    _M.PRUNE_METHOD_NEURON: _SHARED
    | {"ratio", "target_macs_reduction", "scope", "round_to", "max_layer_ratio", "schedule", "steps"}
    | {"auto_ratios"},
    _M.PRUNE_METHOD_LAYER: _SHARED | {"ratio", "target_macs_reduction", "auto_ratios"},
    _M.PRUNE_METHOD_ATTENTION_HEAD: _SHARED
    | {"ratio", "target_macs_reduction", "scope", "max_layer_ratio", "schedule", "steps"},
}
"""The ``PruneSpec`` fields each method reads."""

_RATIO_OVERRIDES = frozenset(
    {_M.PRUNE_METHOD_CHANNEL, _M.PRUNE_METHOD_NEURON, _M.PRUNE_METHOD_ATTENTION_HEAD}
)
"""Methods whose overrides may set a ratio; the others' overrides may only ignore."""
_ZERO_RATIO_OVERRIDES = frozenset({_M.PRUNE_METHOD_CHANNEL, _M.PRUNE_METHOD_NEURON})
"""Methods where an override's ratio 0 means the spec's ratio, applied per layer."""


def patterns(
    items: Iterable[str], path: str, found: list[FieldViolation], *, limit: int = MAX_PATTERNS
) -> None:
    """At most ``limit`` globs of 1 to 256 printable characters each."""
    values = list(items)
    if len(values) > limit:
        found.append(FieldViolation(path, f"at most {limit} patterns"))
    for i, pattern in enumerate(values):
        if not _good_pattern(pattern):
            found.append(
                FieldViolation(f"{path}[{i}]", f"a glob of 1 to {MAX_PATTERN_LENGTH} printable characters")
            )


def _good_pattern(pattern: str) -> bool:
    return bool(pattern) and len(pattern) <= MAX_PATTERN_LENGTH and pattern.isprintable()


def _name(method: int) -> str:
    known = method in _M.PruneMethod.values()
    return _M.PruneMethod.Name(_M.PruneMethod.ValueType(method)) if known else str(method)


def _is_set(prune: spec_pb2.PruneSpec, name: str) -> bool:
    value = getattr(prune, name)
    return bool(len(value)) if name in ("ignore", "overrides") else bool(value)


def prune_violations(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    """Append every rule ``prune`` breaks (see the module doc) to ``found``."""
    method = prune.method
    known = method in FIELDS
    if method == _M.PRUNE_METHOD_UNSPECIFIED:
        found.append(FieldViolation(f"{path}.method", "required (e.g. UNSTRUCTURED or CHANNEL)"))
    if known:
        for field in sorted(set(spec_pb2.PruneSpec.DESCRIPTOR.fields_by_name) - FIELDS[method]):
            if _is_set(prune, field):
                found.append(FieldViolation(f"{path}.{field}", f"not used by {_name(method)}"))
    _targets(prune, path, found)
    _ranges(prune, path, found)
    patterns(prune.ignore, f"{path}.ignore", found)
    _overrides(prune, path, found)
    allowed = IMPORTANCES.get(method)
    importance = prune.importance
    if (
        allowed is not None
        and importance != _M.IMPORTANCE_UNSPECIFIED
        and importance not in allowed
        and importance in _M.Importance.values()
    ):
        names = ", ".join(
            _M.Importance.Name(_M.Importance.ValueType(i)).removeprefix("IMPORTANCE_")
            for i in sorted(allowed)
        )
        found.append(
            FieldViolation(
                f"{path}.importance",
                f"{_M.Importance.Name(prune.importance)} does not apply to {_name(method)}; "
                f"use one of {names}",
            )
        )
    if method == _M.PRUNE_METHOD_LAYER and prune.auto_ratios and importance != _M.IMPORTANCE_UNSPECIFIED:
        found.append(FieldViolation(f"{path}.auto_ratios", "ranks by sensitivity: leave importance unset"))


def _targets(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    ratio, macs, method = prune.ratio, prune.target_macs_reduction, prune.method
    if ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
        found.append(FieldViolation(f"{path}.ratio", f"must be a number with 0 < ratio < 1, got {ratio!r}"))
    if macs and not (math.isfinite(macs) and 1.0 < macs <= MAX_MACS_REDUCTION):
        found.append(
            FieldViolation(
                f"{path}.target_macs_reduction", f"must satisfy 1 < x <= {MAX_MACS_REDUCTION:g}, got {macs!r}"
            )
        )
    if method in _STRUCTURAL:
        if ratio and macs:
            found.append(
                FieldViolation(
                    f"{path}.target_macs_reduction", "set ratio or target_macs_reduction, not both"
                )
            )
        elif not ratio and not macs:
            found.append(
                FieldViolation(f"{path}.ratio", "set ratio (0 < ratio < 1) or target_macs_reduction (> 1)")
            )
    elif method != _M.PRUNE_METHOD_N_M and not ratio:
        found.append(FieldViolation(f"{path}.ratio", f"must be a number with 0 < ratio < 1, got {ratio!r}"))
    if method == _M.PRUNE_METHOD_N_M:
        n, m = prune.n or 2, prune.m or 4
        if not 2 <= m <= MAX_M:
            found.append(FieldViolation(f"{path}.m", f"must be 0 (4) or between 2 and {MAX_M}"))
        elif not 1 <= n < m:
            found.append(FieldViolation(f"{path}.n", f"must be 0 (2) or between 1 and m - 1 ({m - 1})"))
        elif ratio and abs(ratio - (1.0 - n / m)) > 1e-9:
            found.append(
                FieldViolation(
                    f"{path}.ratio", f"N_M zeroes exactly 1 - n/m = {1.0 - n / m:g}: leave ratio 0"
                )
            )


def _ranges(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    if not 0 <= prune.round_to <= MAX_ROUND_TO:
        found.append(FieldViolation(f"{path}.round_to", f"must be 0 (8) or between 1 and {MAX_ROUND_TO}"))
    cap = prune.max_layer_ratio
    if not (math.isfinite(cap) and 0.0 <= cap < 1.0):
        found.append(FieldViolation(f"{path}.max_layer_ratio", f"must be 0 (0.9) or 0 < x < 1, got {cap!r}"))
    if not 0 <= prune.steps <= MAX_STEPS:
        found.append(FieldViolation(f"{path}.steps", f"must be 0 (5) or between 1 and {MAX_STEPS}"))
    elif prune.steps and prune.schedule != _M.PRUNE_SCHEDULE_ITERATIVE:
        found.append(FieldViolation(f"{path}.steps", "only with schedule ITERATIVE"))


def _overrides(prune: spec_pb2.PruneSpec, path: str, found: list[FieldViolation]) -> None:
    items = list(prune.overrides)
    if len(items) > MAX_OVERRIDES:
        found.append(FieldViolation(f"{path}.overrides", f"at most {MAX_OVERRIDES} overrides"))
    ratios_allowed = prune.method in _RATIO_OVERRIDES
    for i, override in enumerate(items):
        here = f"{path}.overrides[{i}]"
        if not _good_pattern(override.pattern):
            found.append(
                FieldViolation(f"{here}.pattern", f"a glob of 1 to {MAX_PATTERN_LENGTH} printable characters")
            )
        ratio = override.ratio
        if override.ignore and ratio:
            found.append(FieldViolation(f"{here}.ratio", "set ratio or ignore, not both"))
        elif ratio and not (math.isfinite(ratio) and 0.0 < ratio < 1.0):
            found.append(FieldViolation(f"{here}.ratio", f"must be 0 <= ratio < 1, got {ratio!r}"))
        elif override.ignore or prune.method not in FIELDS:
            continue
        elif not ratios_allowed:
            found.append(FieldViolation(here, f"{_name(prune.method)} overrides may only ignore layers"))
        elif not ratio and prune.method not in _ZERO_RATIO_OVERRIDES:
            found.append(FieldViolation(f"{here}.ratio", "set a ratio (0 < ratio < 1) or ignore: true"))
