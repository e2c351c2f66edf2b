"""NEURON: remove hidden units of fully connected layers (Linear -> Linear chains).

Only groups made of Linear layers (and parameter-free ops between them) are
eligible; convolutions, norms and embeddings keep their widths. Units are
ranked by weight norm (l1, l2) or by their mean activation on the feeds.
"""

from __future__ import annotations

import onnx

from prunekit.spec.structured_configs import NeuronConfig

from ..base import PruneContext, PruneResult, register_pruner
from .engine import Method, run
from .groups import NEURON_ROOTS

__all__ = ["NeuronConfig", "prune_neurons"]

METHOD = Method(
    name="NEURON",
    roots=NEURON_ROOTS,
    linear_only=True,
    nothing_found="no prunable hidden units: NEURON needs Linear -> Linear chains (an MLP, a transformer's "
    "feed-forward block); use CHANNEL for convolutions",
)


@register_pruner(NeuronConfig)
def prune_neurons(model: onnx.ModelProto, config: NeuronConfig, context: PruneContext) -> PruneResult:
    """Prune hidden units of ``model``'s Linear chains; the result carries the smaller model.

    Raises ``UNSUPPORTED_MODEL`` when the model has no Linear chain to prune.
    """
    return run(model, config, context, METHOD)
