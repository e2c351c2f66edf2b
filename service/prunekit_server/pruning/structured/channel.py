"""CHANNEL: remove whole output channels of Conv layers and hidden features of Linear chains.

Every group of layers that must shrink together (see :mod:`.groups`) is
ranked, planned and pruned by :mod:`.engine`; the result is a physically
smaller model with the same inputs and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from prunekit.v1 import spec_pb2

from ...errors import FieldViolation, invalid_spec
from ..base import PruneContext, PruneResult, register_pruner, register_spec_method
from .config import StructuredConfig, structured_fields
from .engine import Method, run
from .groups import CHANNEL_ROOTS

CHANNEL_IMPORTANCES = ("l1", "l2", "taylor", "bn_scale", "fpgm", "activation", "random")
_METHOD = Method(
    name="CHANNEL",
    roots=CHANNEL_ROOTS,
    linear_only=False,
    nothing_found="no prunable channel group: CHANNEL needs Conv or Linear layers whose output channels "
    "feed other layers (output layers are kept unless prune_output_layers is set)",
)


@dataclass(frozen=True)
class ChannelConfig(StructuredConfig):
    """Remove channels of Conv layers and features of Linear chains. Bad values raise ``ValueError``."""

    method = "channel"
    importances = CHANNEL_IMPORTANCES


@register_spec_method(spec_pb2.PRUNE_METHOD_CHANNEL)
def channel_from_spec(prune_spec: spec_pb2.PruneSpec) -> ChannelConfig:
    """The config for a CHANNEL ``PruneSpec``; ``INVALID_SPEC`` listing every bad field."""
    found: list[FieldViolation] = []
    fields = structured_fields(prune_spec, CHANNEL_IMPORTANCES, found)
    if found:
        raise invalid_spec(found)
    return ChannelConfig(**fields)


@register_pruner(ChannelConfig)
def prune_channels(model: onnx.ModelProto, config: ChannelConfig, context: PruneContext) -> PruneResult:
    """Channel-prune ``model``; ``PruneResult.model`` is the smaller ONNX model, ``module`` its GraphModule.

    Raises ``UNSUPPORTED_MODEL`` when no group can be pruned and ``INVALID_SPEC``
    when the ignore patterns leave none.
    """
    return run(model, config, context, _METHOD)
