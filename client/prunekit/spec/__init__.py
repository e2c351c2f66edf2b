"""The spec room: an ``OptimizationSpec``'s vocabulary, every rule it must follow, its technique configs.

Depends on protobuf and the messages (:mod:`prunekit.v1`) only: never torch, grpc or yaml, so the CLI runs the
very checks the server runs, before anything is uploaded. :func:`spec_violations` lists every rule a spec
breaks; :mod:`.translate` turns spec messages into the configs the engines take.
"""

from __future__ import annotations

from .check import spec_violations
from .limits import SpecLimits
from .violation import FieldViolation, SpecRuleError

__all__ = ["FieldViolation", "SpecLimits", "SpecRuleError", "spec_violations"]
