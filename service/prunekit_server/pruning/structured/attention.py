"""The attention projections CHANNEL leaves to ATTENTION_HEAD.

The output channels of a Q, K or V projection are attention heads: removing some
of them breaks the reshape into heads (and rotary embeddings, grouped-query
repetition, a fused q|k|v split), so Torch-Pruning's groups rooted there are never
valid channel groups. Recognising them first (:func:`~..heads.find_attentions`)
skips them with the reason instead of probing each one, and keeps the dependency
search out of the attention's internals, where it can explode (a LLaMA-style
decoder took longer than the search's bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx

from ..fx_tools import propagate
from ..heads import find_attentions

HEADS_REASON = "an attention projection: its output channels are heads (ATTENTION_HEAD prunes them)"


def attention_projections(gm: fx.GraphModule, args: Sequence[torch.Tensor]) -> dict[str, str]:
    """Module path -> reason for every Q, K and V projection of the attentions in ``gm``.

    A graph the detection cannot read gives none: the groups are then probed one by one as before.
    """
    try:
        propagate(gm, args)
        attentions, _ = find_attentions(gm)
    except Exception:  # the probes still catch what detection would have
        return {}
    return {p.path: HEADS_REASON for att in attentions for p in (att.q, att.k, att.v)}
