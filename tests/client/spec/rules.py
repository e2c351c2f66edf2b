"""What the spec-rule tests share: a valid prune, data shards, and violations grouped by field."""

from __future__ import annotations

from prunekit.spec import spec_violations
from prunekit.spec.limits import ANY_SERVER, SpecLimits
from prunekit.v1 import model_pb2, spec_pb2

ONNX = model_pb2.MODEL_FORMAT_ONNX
PRUNE = spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5)
DATA = spec_pb2.DataSpec(train=["s3://bucket/tenants/default/datasets/a.npz"])
ITERATIVE = spec_pb2.PruneSpec(
    method=spec_pb2.PRUNE_METHOD_CHANNEL, ratio=0.3, schedule=spec_pb2.PRUNE_SCHEDULE_ITERATIVE, steps=3
)


def violations(spec: spec_pb2.OptimizationSpec, limits: SpecLimits = ANY_SERVER) -> dict[str, list[str]]:
    """Each violated field with its descriptions, for an ONNX model."""
    found: dict[str, list[str]] = {}
    for v in spec_violations(spec, ONNX, limits=limits):
        found.setdefault(v.field, []).append(v.description)
    return found
