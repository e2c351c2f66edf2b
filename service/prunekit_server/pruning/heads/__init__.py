"""ATTENTION_HEAD: remove whole heads of multi-head attention, Q/K/V/O kept consistent.

Detection works on the converted GraphModule, from each softmax outward:

* scores: ``softmax`` over the last axis of ``matmul(Qh, Kt)``, possibly
  through a scale, a mask and a bias; one with a head axis (T5's relative
  position bias) is kept per attention, the surgery selecting its kept heads;
  after the softmax dropout, casts and the NaN guard of SDPA decompositions;
* ``Qh``, ``Kt`` and ``Vh`` (the second operand of ``matmul(softmax, Vh)``)
  each lead back (see :mod:`.walk`: permutes, no-op reshapes, scalar scaling,
  rotary embeddings, the key/value repetition of grouped-query attention, the
  dynamo exporter's 3-D round trip) to a reshape ``(..., D) -> (..., H, d)`` of
  an ``nn.Linear`` output, or of one ``chunk`` of a fused q|k|v Linear;
* the context ``matmul(softmax, Vh)`` leads forward, through permutes and
  no-op reshapes, to a reshape merging ``(H, d)`` into the last axis that feeds
  (maybe after flattening the leading axes) the output projection (O).

``nn.MultiheadAttention`` as torch exports it (a packed in-projection split by
``select``, heads merged with the batch) is first rewritten into that form
(:mod:`.normalize`). The head axis is followed through every step; K and V must agree on ``H`` and
``d``; Q has ``group`` times as many heads when K and V are repeated in whole
groups (grouped-query attention). The unit pruned is a key/value head with its
``group`` query heads (one head without grouping): group structure and rotary
tables stay valid, so the pruned model has ``H / group`` fewer key/value heads
and ``H`` query heads fewer by the same factor. A model with no attention found
fails UNSUPPORTED_MODEL with the first reasons.

Pruning unit ``u`` removes its rows of Q (``group * d``), K and V (``d``;
weights, biases; in their part of a fused Linear) and the matching columns of
O, and rewrites every reshape that carries the head count as a constant; sizes
the converter derives from the data stay. At least one unit of each attention
is kept.

Importance per unit: L1 (default) or L2 of its Q/K/V rows and O columns;
ACTIVATION: mean absolute value of its context vectors on the feeds;
TAYLOR: sum of ``|gradient x weight|`` over its slices, the gradient of the
outputs' mean square on the feeds; RANDOM (seeded).
"""

from __future__ import annotations

from prunekit.spec.prune_configs import Scope
from prunekit.spec.structured_configs import HeadConfig, HeadImportance

from .detect import find_attentions
from .normalize import normalize
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
    "normalize",
    "prune_heads",
    "remove_heads",
]
