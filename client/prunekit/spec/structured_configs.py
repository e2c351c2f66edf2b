"""Configs of the pruning methods that remove structure: CHANNEL, NEURON, LAYER and ATTENTION_HEAD.

Each takes exactly one of ``ratio`` and ``target_macs_reduction``; the shared checks below apply the rules
of :mod:`.values` and the method table of :mod:`.methods`, the same the spec checks use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .methods import METHODS, importance_problem
from .prune_configs import PruneConfig, Scope, check_scope
from .technique import check_patterns
from .values import (
    fraction_problem,
    int_range_problem,
    override_ratio_problem,
    pattern_problem,
    raise_problem,
    ratio_problem,
    target_problem,
    targets_problem,
)

__all__ = [
    "DATA_DRIVEN",
    "DEFAULT_MAX_LAYER_RATIO",
    "DEFAULT_ROUND_TO",
    "DEFAULT_STEPS",
    "MAX_ROUND_TO",
    "MAX_STEPS",
    "ChannelConfig",
    "HeadConfig",
    "HeadImportance",
    "LayerConfig",
    "LayerImportance",
    "NeuronConfig",
    "Schedule",
    "StructuredConfig",
    "check_overrides",
    "check_targets",
]

Schedule = Literal["one_shot", "iterative"]
LayerImportance = Literal["l1", "l2", "taylor", "activation", "random", "sensitivity"]
HeadImportance = Literal["l1", "l2", "taylor", "activation", "random"]
DEFAULT_ROUND_TO = 8
MAX_ROUND_TO = 1024
DEFAULT_MAX_LAYER_RATIO = 0.9
DEFAULT_STEPS = 5
MAX_STEPS = 100
DATA_DRIVEN = frozenset({"taylor", "activation", "sensitivity", "wanda", "sparsegpt"})
"""Importance criteria that run the model on the context's feeds."""


def check_targets(ratio: float, macs: float) -> None:
    """``ValueError`` unless exactly one of ``ratio`` and ``macs`` (the MACs target) is set, and valid."""
    choice = targets_problem(ratio, macs)
    if choice:
        raise ValueError(choice[1])
    if ratio:
        raise_problem("ratio", ratio_problem(ratio))
    if macs:
        raise_problem("target_macs_reduction", target_problem(macs))


def check_importance(method: str, importance: object, allowed: tuple[str, ...]) -> None:
    """``ValueError`` unless ``importance`` is one of ``allowed``."""
    raise_problem("importance", importance_problem(method, str(importance), allowed))


def check_overrides(value: Any, *, zero_allowed: bool) -> tuple[tuple[str, float], ...]:
    """``value`` as ``(pattern, ratio)`` pairs; ``ValueError`` for a bad pair, glob or ratio."""
    if isinstance(value, str):
        raise ValueError("overrides must be a sequence of (pattern, ratio) pairs")
    out: list[tuple[str, float]] = []
    for item in value:
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"an override is a (pattern, ratio) pair, got {item!r}")
        pattern, ratio = item
        problem = pattern_problem(pattern)
        if problem:
            raise ValueError(f"override patterns must each be {problem}")
        raise_problem("override ratio", override_ratio_problem(ratio, zero_allowed=zero_allowed))
        out.append((pattern, float(ratio)))
    return tuple(out)


def _check_rounds(max_layer_ratio: float, steps: int) -> None:
    raise_problem("max_layer_ratio", fraction_problem(max_layer_ratio, "max_layer_ratio"))
    raise_problem("steps", int_range_problem(steps, 1, MAX_STEPS))


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
            "description": "How channels are ranked: l1, l2, taylor, bn_scale, fpgm, activation, random, "
            "wanda or sparsegpt (the method's subset); sparsegpt also refits the layers reading the "
            "removed channels on calibration inputs."
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
        check_targets(self.ratio, self.target_macs_reduction)
        check_scope(self.scope)
        check_importance(self.method, self.importance, self.importances)
        raise_problem("round_to", int_range_problem(self.round_to, 1, MAX_ROUND_TO))
        _check_rounds(self.max_layer_ratio, self.steps)
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))
        object.__setattr__(self, "overrides", check_overrides(self.overrides, zero_allowed=True))

    @property
    def data_driven(self) -> bool:
        """Whether the importance criterion runs the model on the context's feeds."""
        return self.importance in DATA_DRIVEN


@dataclass(frozen=True)
class ChannelConfig(StructuredConfig):
    """Remove channels of Conv layers and features of Linear chains. Bad values raise ``ValueError``."""

    method = "channel"
    importances = METHODS["channel"].importances


@dataclass(frozen=True)
class NeuronConfig(StructuredConfig):
    """Remove hidden units of Linear chains. Bad values raise ``ValueError``."""

    method = "neuron"
    importances = METHODS["neuron"].importances


@dataclass(frozen=True)
class LayerConfig(PruneConfig):
    """Remove residual blocks or identity-shaped layers. Bad values raise ``ValueError``."""

    method = "layer"
    importances: ClassVar[tuple[str, ...]] = (*METHODS["layer"].importances, "sensitivity")

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
        check_targets(self.ratio, self.target_macs_reduction)
        check_importance(self.method, self.importance, self.importances)
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))

    @property
    def data_driven(self) -> bool:
        """Whether the importance criterion runs the model on the context's feeds."""
        return self.importance in DATA_DRIVEN


@dataclass(frozen=True)
class HeadConfig(PruneConfig):
    """Remove attention heads. Bad values raise ``ValueError``."""

    method = "attention_head"
    importances: ClassVar[tuple[str, ...]] = METHODS["attention_head"].importances

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
        check_targets(self.ratio, self.target_macs_reduction)
        _check_rounds(self.max_layer_ratio, self.steps)
        check_importance(self.method, self.importance, self.importances)
        check_scope(self.scope)
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))
        object.__setattr__(self, "overrides", check_overrides(self.overrides, zero_allowed=False))

    @property
    def data_driven(self) -> bool:
        """Whether the importance criterion runs the model on the context's feeds."""
        return self.importance in DATA_DRIVEN
