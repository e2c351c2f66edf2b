"""What each pruning method reads and accepts, by its short name (``channel``): one table for all checks.

The short names are the ``PruneMethod`` values' (:func:`prunekit.spec.names.enum_short_name`) and the
configs' JSON ``method`` names; importance criteria go by the ``Importance`` short names (``bn_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METHODS", "Method", "importance_problem"]

_SHARED = frozenset({"method", "ignore", "overrides", "prune_output_layers", "importance"})
_SHRINKING = frozenset(
    {
        "ratio",
        "target_macs_reduction",
        "scope",
        "round_to",
        "max_layer_ratio",
        "schedule",
        "steps",
        "auto_ratios",
    }
)
_CALIBRATED = ("wanda", "sparsegpt")
_WEIGHT_ZEROING = ("l1", "l2", *_CALIBRATED)


@dataclass(frozen=True)
class Method:
    """One pruning method's rules.

    ``fields``: the ``PruneSpec`` fields it reads (setting another is a violation); ``importances``: the
    criteria a spec may name (the first is the default; UNSTRUCTURED and N_M rank by magnitude, L1 or L2
    alike, or by WANDA or SPARSEGPT on calibration inputs; CHANNEL and NEURON also by WANDA or SPARSEGPT,
    the latter refitting the layers that read the removed channels; LOW_RANK names none);
    ``structural``: it removes structure and takes exactly one of ratio and MACs target;
    ``override_ratios``: its overrides may set a ratio (else they may only ignore);
    ``zero_override``: an override's ratio 0 means the run's ratio, applied per layer.
    """

    fields: frozenset[str]
    importances: tuple[str, ...] = ()
    structural: bool = False
    override_ratios: bool = False
    zero_override: bool = False


METHODS: dict[str, Method] = {
    "unstructured": Method(frozenset({"method", "ratio", "scope", "ignore", "importance"}), _WEIGHT_ZEROING),
    "n_m": Method(_SHARED | {"ratio", "n", "m"}, _WEIGHT_ZEROING),
    "channel": Method(
        _SHARED | _SHRINKING,
        ("l1", "l2", "taylor", "bn_scale", "fpgm", "activation", "random", *_CALIBRATED),
        structural=True,
        override_ratios=True,
        zero_override=True,
    ),
    "neuron": Method(
        _SHARED | _SHRINKING,
        ("l1", "l2", "activation", "taylor", "fpgm", "random", *_CALIBRATED),
        structural=True,
        override_ratios=True,
        zero_override=True,
    ),
    "layer": Method(
        _SHARED | {"ratio", "target_macs_reduction", "auto_ratios"},
        ("l2", "l1", "taylor", "activation", "random"),
        structural=True,
    ),
    "attention_head": Method(
        _SHARED | {"ratio", "target_macs_reduction", "scope", "max_layer_ratio", "schedule", "steps"},
        ("l1", "l2", "taylor", "activation", "random"),
        structural=True,
        override_ratios=True,
    ),
    "low_rank": Method(
        frozenset(
            {
                "method",
                "ratio",
                "target_macs_reduction",
                "ignore",
                "overrides",
                "prune_output_layers",
                "low_rank",
            }
        )
    ),
    "dynamic": Method(frozenset({"method", "dynamic"})),
}
"""Every pruning method the service implements, by short name."""


def importance_problem(method: str, importance: str, allowed: tuple[str, ...]) -> str | None:
    """``importance`` must be one of ``allowed``, the criteria ``method`` ranks by."""
    if importance in allowed:
        return None
    if importance in _CALIBRATED:
        takers = ", ".join(name for name, rules in METHODS.items() if importance in rules.importances)
        return (
            f"{importance!r} reads each layer's calibration inputs and applies to {takers} only, not to "
            f"{method}; use one of {', '.join(allowed) or 'none (leave importance unset)'}"
        )
    return f"{importance!r} does not apply to {method}; use one of {', '.join(allowed)}"
