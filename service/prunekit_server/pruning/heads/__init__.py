"""ATTENTION_HEAD: remove whole heads of multi-head attention, Q/K/V/O kept consistent.

Detection works on the converted GraphModule, from each softmax outward:

* scores: ``softmax`` over the last axis of ``matmul(Qh, Kt)``, possibly
  through a scale and a mask (element-wise ops whose other operand is a
  scalar or has size 1 on the head axis);
* ``Qh``, ``Kt`` and ``Vh`` (the second operand of ``matmul(softmax, Vh)``,
  through dropout or casts) each lead back, through permutes, transposes,
  ``contiguous`` and scalar scaling, to a reshape ``(..., D) -> (..., H, d)``
  of an ``nn.Linear`` output (the Q, K and V projections, ``D = H * d``);
* the context ``matmul(softmax, Vh)`` leads forward, through permutes, to a
  reshape merging ``(H, d)`` back into ``D`` that feeds the output projection
  ``nn.Linear`` (O).

The head axis is followed through every permute; Q, K and V must agree on
``H`` and ``d`` and carry the head axis on the same batch axis of both
matmuls. This is what the legacy and the dynamo exporter make of a
hand-written attention (``x.view(B, T, H, -1).transpose(1, 2)``...); fused
QKV projections, grouped-query attention and anything else are left alone
(a model with no attention found fails UNSUPPORTED_MODEL with the first reasons).

Pruning head ``h`` removes rows ``h*d:(h+1)*d`` of Q, K and V (weights and
biases) and the same columns of O, and rewrites the head count the reshapes
use: the split's constant ``H`` becomes the new count (a ``size // H`` head
width gets the new divisor), a constant merged width ``H*d`` becomes the new
one; sizes the converter already derives from the data stay. At least one
head of each attention is kept.

Importance per head: L1 (default) or L2 of its Q/K/V rows and O columns;
ACTIVATION: mean absolute value of its context vectors on the feeds;
TAYLOR: sum of ``|gradient x weight|`` over its slices, the gradient of the
outputs' mean square on the feeds; RANDOM (seeded).
"""

from __future__ import annotations

from prunekit.spec.prune_configs import Scope
from prunekit.spec.structured_configs import HeadConfig, HeadImportance

from .detect import find_attentions
from .prune import prune_heads
from .rank import head_scores
from .structure import Attention, Projection
from .surgery import check_rewritable, remove_heads

__all__ = [
    "Attention",
    "HeadConfig",
    "HeadImportance",
    "Projection",
    "Scope",
    "check_rewritable",
    "find_attentions",
    "head_scores",
    "prune_heads",
    "remove_heads",
]
