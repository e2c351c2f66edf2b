"""Recovery between the rounds of an iterative schedule, until fine-tuning fills the hook.

:class:`BatchNormRefresh` re-estimates every BatchNorm's running statistics
on the available inputs: the statistics are reset, the inputs run through the
graph with only the BatchNorms in training mode and ``momentum=None`` (a
plain average over the batches), then everything returns to eval mode. Other
layers (dropout) stay in eval mode, and no weight changes. When a batch
fails (e.g. a BatchNorm that sees one value per channel) the old statistics
are restored and the error propagates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prunekit.v1 import model_pb2


class BatchNormRefresh:
    """A ``PruneContext.recover`` hook: refresh BatchNorm statistics on ``feeds``.

    ``feeds`` are name -> array dicts in the model's input names; ``inputs``
    gives the order the GraphModule takes them in.
    """

    description = "BatchNorm statistics re-estimated"

    def __init__(
        self, inputs: Sequence[model_pb2.InputSpec], feeds: Sequence[Mapping[str, np.ndarray]]
    ) -> None:
        self._batches = [
            tuple(torch.from_numpy(np.asarray(feed[spec.name], order="C")) for spec in inputs)
            for feed in feeds
        ]
        self.calls = 0

    def __call__(self, module: nn.Module) -> None:
        norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.calls += 1
        if not norms or not self._batches:
            return
        momenta = [m.momentum for m in norms]
        saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
        was_training = module.training
        module.eval()
        try:
            for norm in norms:
                if norm.track_running_stats:
                    norm.reset_running_stats()
                norm.momentum = None
                norm.train()
            with torch.no_grad():
                for batch in self._batches:
                    module(*batch)
        except Exception:
            for norm, state in zip(norms, saved, strict=True):
                norm.load_state_dict(state)
            raise
        finally:
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
            module.train(was_training)
