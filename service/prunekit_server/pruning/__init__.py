"""Pruning methods: one verb (:func:`prune`) and one config dataclass per method.

Importing this package registers every method shipped with it. A config's
type picks its handler; :func:`config_from_spec` turns an API ``PruneSpec``
into the right config.
"""

from __future__ import annotations

from .base import (
    WEIGHTED_OPS,
    LayerPruneInfo,
    PruneConfig,
    PruneResult,
    WeightedLayer,
    apply_tensors,
    config_from_spec,
    prune,
    register_pruner,
    register_spec_method,
    registered_methods,
    weighted_layers,
)
from .unstructured import UnstructuredConfig, prune_unstructured

__all__ = [
    "WEIGHTED_OPS",
    "LayerPruneInfo",
    "PruneConfig",
    "PruneResult",
    "UnstructuredConfig",
    "WeightedLayer",
    "apply_tensors",
    "config_from_spec",
    "prune",
    "prune_unstructured",
    "register_pruner",
    "register_spec_method",
    "registered_methods",
    "weighted_layers",
]
