"""LAYER: remove whole residual blocks (or identity-shaped layers) and rewire the graph.

Units are found on the converted GraphModule (shapes from one sample run):

* a **residual block** is an addition ``skip + branch`` of two tensors of the
  addition's own shape where ``branch`` is computed from ``skip``, contains at
  least one Linear/Conv, and nothing outside the block reads any node of the
  branch. Removing it replaces the addition by ``skip``: whatever followed
  (a ReLU, a LayerNorm) stays. A projection shortcut (``conv(x) + branch(x)``)
  is not a block: neither operand is the other's input.
* when the model has no residual block, an **identity-shaped layer** is a
  Linear/Conv whose output has its input's shape, with the BatchNorm that
  alone reads it; removing it passes its input through.

Output layers are never inside a unit unless ``prune_output_layers``; units
with a layer matching ``ignore`` stay. Units are ranked (least important go
first) by the L2 (default) or L1 norm of their weights, by ACTIVATION (how
much the unit changes its input on the feeds, ``||out - in|| / ||in||``), by
TAYLOR (``|gradient x weight|`` of the outputs' mean square), RANDOM, or by
measured SENSITIVITY (``1 -`` the cosine similarity of the model's first
output with the unit bypassed, on the feeds). ``ratio`` of the units are
removed (at least one), or units are removed until the MACs fall by
``target_macs_reduction``. Nested units are never both chosen. Dead nodes and
unused submodules are dropped; output shapes do not change.
"""

from __future__ import annotations

from prunekit.spec.structured_configs import LayerConfig, LayerImportance

from .detect import Unit, find_blocks, find_identity_layers, find_units
from .rank import unit_scores
from .removal import prune_layers, remove_units

__all__ = [
    "LayerConfig",
    "LayerImportance",
    "Unit",
    "find_blocks",
    "find_identity_layers",
    "find_units",
    "prune_layers",
    "remove_units",
    "unit_scores",
]
