"""The caps of the spec rules that a server configures (its settings name them alike).

The defaults are what every server allows, the CLI's view before it knows which server it talks to: the
shard count of :data:`~.data.MAX_DATA_SHARDS`, inputs up to :data:`~.inputs.MAX_INPUT_ELEMENTS`, and no
cap on a fine-tuning budget. A server passes its own (:func:`prunekit_server.spec_check.check_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import MAX_DATA_SHARDS

__all__ = ["ANY_SERVER", "SpecLimits"]


@dataclass(frozen=True)
class SpecLimits:
    """Server caps: 0 means no cap beyond the fixed rules."""

    max_data_shards: int = MAX_DATA_SHARDS
    #: Bytes of one batch of the declared inputs, all together.
    max_input_bytes: int = 0
    #: Caps of ``finetune.epochs``; ``finetune.steps`` and ``steps_per_round``; ``finetune.max_seconds``.
    max_finetune_epochs: int = 0
    max_finetune_steps: int = 0
    max_finetune_seconds: float = 0.0
    #: Cap of ``finetune.workers``: 1 on a server whose executor is not ``ray``.
    max_finetune_workers: int = 0
    #: Cap of ``timeout_seconds``: the server's job timeout.
    max_timeout_seconds: float = 0.0


ANY_SERVER = SpecLimits()
"""The caps every server applies (the defaults)."""
