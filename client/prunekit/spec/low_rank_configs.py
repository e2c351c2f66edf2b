"""The LOW_RANK method's config: factorize layers by truncated SVD, ranks by kept energy or a MACs goal."""

from __future__ import annotations

from dataclasses import dataclass, field

from .prune_configs import PruneConfig
from .technique import check_patterns
from .values import fraction_problem, raise_problem, ratio_problem, target_problem

__all__ = ["LowRankConfig", "low_rank_goal_problem"]


CONV_FACTORIZATIONS = ("channel", "spatial", "auto")


def low_rank_goal_problem(ratio: float, macs: float, energy: float) -> tuple[str, str] | None:
    """Exactly one of ``ratio``, ``target_macs_reduction`` and ``energy`` is set: ``(field, problem)``."""
    count = sum(1 for value in (ratio, macs, energy) if value)
    if count == 1:
        return None
    problem = "set exactly one of ratio, target_macs_reduction and low_rank.energy"
    if count == 0:
        return "ratio", problem + " (ratio: the fraction of the eligible layers' MACs to remove)"
    return ("low_rank.energy" if energy else "target_macs_reduction"), problem + ", not several"


@dataclass(frozen=True)
class LowRankConfig(PruneConfig):
    """Factorize Gemm/MatMul/Conv layers into two of rank r; exactly one goal is set (``ValueError`` if not).

    ``energy``: each layer keeps the smallest rank holding that fraction of its squared singular values;
    ``ratio``: that fraction of the eligible layers' MACs is removed; ``target_macs_reduction``: the whole
    model's MACs are divided by it. A layer whose rank would not lower its MACs stays dense.
    """

    method = "low_rank"

    ratio: float = field(
        default=0.0,
        metadata={
            "description": "Fraction of the eligible layers' MACs to remove, 0 < ratio < 1 (0: unset)."
        },
    )
    target_macs_reduction: float = field(
        default=0.0,
        metadata={"description": "Divide the whole model's MACs by this, 1 < x <= 100 (0: unset)."},
    )
    energy: float = field(
        default=0.0,
        metadata={
            "description": "Kept fraction of each layer's squared singular values, 0 < energy < 1 (0: unset)."
        },
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs matched against layer (node) names and weight names; "
            "matching layers are left untouched."
        },
    )
    prune_output_layers: bool = field(
        default=False,
        metadata={"description": "Also factorize the layers that produce a graph output."},
    )
    conv: str = field(
        default="channel",
        metadata={
            "description": "How a Conv is split: channel (k x k to r channels, then 1 x 1), spatial "
            "(k x 1 to r channels, then 1 x k) or auto (per layer, fewer MACs at the goal's energy)."
        },
    )

    def __post_init__(self) -> None:
        if self.ratio:
            raise_problem("ratio", ratio_problem(self.ratio))
        if self.target_macs_reduction:
            raise_problem("target_macs_reduction", target_problem(self.target_macs_reduction))
        if self.energy:
            raise_problem("energy", fraction_problem(self.energy, "energy"))
        choice = low_rank_goal_problem(self.ratio, self.target_macs_reduction, self.energy)
        if choice:
            raise_problem(*choice)
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))
        if not isinstance(self.prune_output_layers, bool):
            raise ValueError("prune_output_layers must be true or false")
        if self.conv not in CONV_FACTORIZATIONS:
            raise ValueError(f"conv must be one of {', '.join(CONV_FACTORIZATIONS)}, got {self.conv!r}")
