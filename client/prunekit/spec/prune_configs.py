"""Pruning configs: the base every method's config extends, and the weight-zeroing methods' configs.

Configs are frozen dataclasses whose fields describe themselves (``metadata["description"]``) and
round-trip through JSON with ``to_dict()`` / :meth:`PruneConfig.from_dict`. A config class with a
``method`` name adds itself to :data:`PRUNE_CONFIGS` when it is defined; bad values raise ``ValueError``
through the same rules (:mod:`.values`) the spec checks use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .technique import Registry, check_patterns, config_from_dict, config_to_dict, describe_fields
from .values import MAX_M, n_m_problems, raise_problem, ratio_problem

__all__ = [
    "PRUNE_CONFIGS",
    "WEIGHT_CRITERIA",
    "NMConfig",
    "PruneConfig",
    "Scope",
    "UnstructuredConfig",
    "WeightCriterion",
    "check_scope",
]

Scope = Literal["global", "per_layer"]
WeightCriterion = Literal["magnitude", "wanda", "sparsegpt"]
WEIGHT_CRITERIA: tuple[WeightCriterion, ...] = ("magnitude", "wanda", "sparsegpt")
"""How the weight-zeroing methods choose weights: by |w|, by |w| x input norm, or with OBS reconstruction."""
_CRITERION_DESCRIPTION = (
    "'magnitude': the smallest |w|; 'wanda': the smallest |w| x input-feature L2 norm within each output "
    "row, on calibration inputs; 'sparsegpt': layer by layer, the least output error, the remaining "
    "weights updated with the inverse Hessian of the layer's calibration inputs."
)


def check_criterion(criterion: object) -> None:
    """``ValueError`` unless ``criterion`` is one of :data:`WEIGHT_CRITERIA`."""
    if criterion not in WEIGHT_CRITERIA:
        raise ValueError(f"importance must be one of {', '.join(WEIGHT_CRITERIA)}, got {criterion!r}")


PRUNE_CONFIGS: Registry[str, type[PruneConfig]] = Registry()
"""JSON method name -> config type, for every pruning config defined."""


def check_scope(scope: object) -> None:
    """``ValueError`` unless ``scope`` is ``"global"`` or ``"per_layer"``."""
    if scope not in ("global", "per_layer"):
        raise ValueError(f"scope must be 'global' or 'per_layer', got {scope!r}")


@dataclass(frozen=True)
class PruneConfig:
    """Base of every method's config. Subclasses set ``method`` (a stable JSON name)."""

    method: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("method"):
            PRUNE_CONFIGS.add(cls.method, cls)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"method": <name>, <field>: <value>, ...}`` (tuples become lists)."""
        return config_to_dict(self, "method")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneConfig:
        """Inverse of :meth:`to_dict`. On the base class ``data["method"]`` picks the config type.

        Raises ``ValueError`` for an unknown method, unknown keys or invalid values.
        """
        return config_from_dict(cls, PruneConfig, PRUNE_CONFIGS.as_dict(), "method", "pruning method", data)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> human description, from each field's metadata."""
        return describe_fields(cls)


@dataclass(frozen=True)
class UnstructuredConfig(PruneConfig):
    """Zero ``ratio`` of the eligible weights by magnitude. Invalid values raise ``ValueError``."""

    method = "unstructured"

    ratio: float = field(
        metadata={"description": "Fraction of eligible weights to set to zero, 0 < ratio < 1."}
    )
    scope: Scope = field(
        default="global",
        metadata={
            "description": "'global': one threshold over all eligible layers; "
            "'per_layer': the ratio of each layer's weights."
        },
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs matched against layer (node) names and weight names; "
            "matching layers are left untouched."
        },
    )
    importance: WeightCriterion = field(default="magnitude", metadata={"description": _CRITERION_DESCRIPTION})

    def __post_init__(self) -> None:
        raise_problem("ratio", ratio_problem(self.ratio))
        check_scope(self.scope)
        check_criterion(self.importance)
        if self.importance != "magnitude" and self.scope != "per_layer":
            raise ValueError(
                f"importance {self.importance!r} compares weights within a layer: use scope per_layer"
            )
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))


@dataclass(frozen=True)
class NMConfig(PruneConfig):
    """Keep ``n`` of every ``m`` consecutive weights along the reduction axis (``ValueError`` if invalid)."""

    method = "n_m"

    n: int = field(default=2, metadata={"description": "Weights kept in every group, 1 <= n < m."})
    m: int = field(
        default=4,
        metadata={
            "description": f"Group length along the reduction (input-channel) axis, 2 <= m <= {MAX_M}."
        },
    )
    ignore: tuple[str, ...] = field(
        default=(),
        metadata={
            "description": "fnmatch globs matched against layer (node) names and weight names; "
            "matching layers are left dense."
        },
    )
    prune_output_layers: bool = field(
        default=False,
        metadata={
            "description": "Also sparsify the layers that produce a graph output (left dense by default)."
        },
    )
    importance: WeightCriterion = field(default="magnitude", metadata={"description": _CRITERION_DESCRIPTION})

    def __post_init__(self) -> None:
        problem = n_m_problems(self.n, self.m)
        if problem:
            raise_problem(*problem)
        check_criterion(self.importance)
        object.__setattr__(self, "ignore", check_patterns(self.ignore, "ignore"))
        if not isinstance(self.prune_output_layers, bool):
            raise ValueError("prune_output_layers must be true or false")

    @property
    def ratio(self) -> float:
        """Fraction of an eligible layer's weights set to zero: ``1 - n / m``."""
        return 1.0 - self.n / self.m
