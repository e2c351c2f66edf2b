"""NEURON: remove hidden units of fully connected layers (Linear -> Linear chains).

Only groups made of Linear layers (and parameter-free ops between them) are
eligible; convolutions, norms and embeddings keep their widths. Units are
ranked by weight norm (l1, l2) or by their mean activation on the feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from prunekit.v1 import spec_pb2

from ...errors import FieldViolation, invalid_spec
from ..base import PruneContext, PruneResult, register_pruner, register_spec_method
from .config import StructuredConfig, structured_fields
from .engine import Method, run
from .groups import NEURON_ROOTS

NEURON_IMPORTANCES = ("l1", "l2", "activation", "taylor", "fpgm", "random")
_METHOD = Method(
    name="NEURON",
    roots=NEURON_ROOTS,
    linear_only=True,
    nothing_found="no prunable hidden units: NEURON needs Linear -> Linear chains (an MLP, a transformer's "
    "feed-forward block); use CHANNEL for convolutions",
)


@dataclass(frozen=True)
class NeuronConfig(StructuredConfig):
    """Remove hidden units of Linear chains. Bad values raise ``ValueError``."""

    method = "neuron"
    importances = NEURON_IMPORTANCES


@register_spec_method(spec_pb2.PRUNE_METHOD_NEURON)
def neuron_from_spec(prune_spec: spec_pb2.PruneSpec) -> NeuronConfig:
    """The config for a NEURON ``PruneSpec``; ``INVALID_SPEC`` listing every bad field."""
    found: list[FieldViolation] = []
    fields = structured_fields(prune_spec, NEURON_IMPORTANCES, found)
    if found:
        raise invalid_spec(found)
    return NeuronConfig(**fields)


@register_pruner(NeuronConfig)
def prune_neurons(model: onnx.ModelProto, config: NeuronConfig, context: PruneContext) -> PruneResult:
    """Prune hidden units of ``model``'s Linear chains; the result carries the smaller model.

    Raises ``UNSUPPORTED_MODEL`` when the model has no Linear chain to prune.
    """
    return run(model, config, context, _METHOD)
