"""DYNAMIC: input-dependent computation built into the exported graph.

EARLY_EXIT (:mod:`.early_exit`): exit heads after chosen blocks of a classifier, trained by distillation
from the original with the backbone frozen, a threshold calibrated on the eval inputs, nested ONNX ``If``
nodes so ONNX Runtime runs only the blocks an input needs (:mod:`.compose`). Where a model can be gated:
:mod:`.points`; the heads: :mod:`.heads`; the threshold: :mod:`.calibrate`. Forms this server does not
build, and models with nowhere to gate, are ``FAILED_PRECONDITION`` (:mod:`.errors`).

TOKEN_SKIP (:mod:`.token_skip`): from one encoder layer on, each input keeps its most attended tokens
(TopK and GatherElements in the graph), the kept count calibrated on the eval inputs.

DYNAMIC needs the job's data (train and eval splits), so the pipeline calls :func:`early_exit` itself
rather than through the pruning registry.
"""

from __future__ import annotations

from prunekit.spec.dynamic_configs import DynamicConfig

from .calibrate import THRESHOLDS, CalibrationRule, SweepPoint
from .compose import THRESHOLD, build_early_exit, with_threshold
from .early_exit import EarlyExit, Split, early_exit
from .errors import form_unavailable, not_applicable
from .token_skip import KEEP, TokenSkip, token_skip, with_keep

__all__ = [
    "KEEP",
    "THRESHOLD",
    "THRESHOLDS",
    "CalibrationRule",
    "DynamicConfig",
    "EarlyExit",
    "Split",
    "SweepPoint",
    "TokenSkip",
    "build_early_exit",
    "early_exit",
    "form_unavailable",
    "not_applicable",
    "token_skip",
    "with_keep",
    "with_threshold",
]
