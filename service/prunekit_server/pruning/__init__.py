"""Pruning methods: one verb (:func:`prune`) and one config dataclass per method.

Importing this package registers every method shipped with it. A config's
type picks its handler. The configs live in the spec room, which also turns an API
``PruneSpec`` into the right config (:func:`prunekit.spec.translate.prune_config`).
"""

from __future__ import annotations

from prunekit.spec.prune_configs import NMConfig

from .base import (
    WEIGHTED_OPS,
    LayerPruneInfo,
    MetricCurve,
    PruneConfig,
    PruneContext,
    PruneResult,
    ScheduleStep,
    WeightedLayer,
    apply_tensors,
    prune,
    register_pruner,
    registered_methods,
    weighted_layers,
)
from .heads import HeadConfig, prune_heads
from .layer import LayerConfig, prune_layers
from .low_rank import LowRankConfig, prune_low_rank
from .n_m import prune_n_m
from .recovery import BatchNormRefresh
from .structured import ChannelConfig, NeuronConfig, StructuredConfig, prune_channels, prune_neurons
from .unstructured import UnstructuredConfig, prune_unstructured

__all__ = [
    "WEIGHTED_OPS",
    "BatchNormRefresh",
    "ChannelConfig",
    "HeadConfig",
    "LayerConfig",
    "LayerPruneInfo",
    "LowRankConfig",
    "MetricCurve",
    "NMConfig",
    "NeuronConfig",
    "PruneConfig",
    "PruneContext",
    "PruneResult",
    "ScheduleStep",
    "StructuredConfig",
    "UnstructuredConfig",
    "WeightedLayer",
    "apply_tensors",
    "prune",
    "prune_channels",
    "prune_heads",
    "prune_layers",
    "prune_low_rank",
    "prune_n_m",
    "prune_neurons",
    "prune_unstructured",
    "register_pruner",
    "registered_methods",
    "weighted_layers",
]
