"""Structured pruning that removes whole channels: CHANNEL and NEURON.

One engine (:mod:`.engine`) does the work on the converted GraphModule with
Torch-Pruning's dependency graph: :mod:`.groups` finds and probes the groups of
layers that shrink together, :mod:`.importance` ranks their channels,
:mod:`.targets` turns ratios or MACs targets into per-group widths; WANDA and
SPARSEGPT read calibration inputs (:mod:`.layer_inputs`, :mod:`.calibrated`) and
SPARSEGPT refits the layers after the removed channels (:mod:`.reconstruct`).
:mod:`.channel` and :mod:`.neuron` register the two methods.
"""

from __future__ import annotations

from prunekit.spec.structured_configs import StructuredConfig

from .channel import ChannelConfig, prune_channels
from .neuron import NeuronConfig, prune_neurons

__all__ = ["ChannelConfig", "NeuronConfig", "StructuredConfig", "prune_channels", "prune_neurons"]
