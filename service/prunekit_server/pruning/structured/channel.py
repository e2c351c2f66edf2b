"""CHANNEL: remove whole output channels of Conv layers and hidden features of Linear chains.

Every group of layers that must shrink together (see :mod:`.groups`) is
ranked, planned and pruned by :mod:`.engine`; the result is a physically
smaller model with the same inputs and outputs.
"""

from __future__ import annotations

import onnx

from prunekit.spec.structured_configs import ChannelConfig

from ..base import PruneContext, PruneResult, register_pruner
from .engine import Method, run
from .groups import CHANNEL_ROOTS

__all__ = ["ChannelConfig", "prune_channels"]

METHOD = Method(
    name="CHANNEL",
    roots=CHANNEL_ROOTS,
    linear_only=False,
    nothing_found="no prunable channel group: CHANNEL needs Conv or Linear layers whose output channels "
    "feed other layers (output layers are kept unless prune_output_layers is set)",
)


@register_pruner(ChannelConfig)
def prune_channels(model: onnx.ModelProto, config: ChannelConfig, context: PruneContext) -> PruneResult:
    """Channel-prune ``model``; ``PruneResult.model`` is the smaller ONNX model, ``module`` its GraphModule.

    Raises ``UNSUPPORTED_MODEL`` when no group can be pruned and ``INVALID_SPEC``
    when the ignore patterns leave none.
    """
    return run(model, config, context, METHOD)
