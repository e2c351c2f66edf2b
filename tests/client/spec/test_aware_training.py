"""The ``quantize.aware_training`` rules and their translation into the quantize plan."""

from __future__ import annotations

import pytest

from prunekit.spec import spec_violations
from prunekit.spec.quantize_configs import AwareTrainingConfig
from prunekit.spec.translate import quantize_plan
from prunekit.v1 import model_pb2, spec_pb2

P = spec_pb2


def _spec(mode: int, aware: spec_pb2.AwareTrainingSpec, train: bool = True) -> spec_pb2.OptimizationSpec:
    return P.OptimizationSpec(
        quantize=P.QuantizeSpec(mode=mode, aware_training=aware),  # type: ignore[arg-type]
        data=P.DataSpec(train=["dataset://x"] if train else []),
    )


def _violations(spec: spec_pb2.OptimizationSpec) -> dict[str, str]:
    return {v.field: v.description for v in spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX)}


def test_a_valid_aware_training_translates_with_defaults() -> None:
    spec = _spec(P.QUANTIZE_MODE_STATIC_INT8, P.AwareTrainingSpec(steps=200))
    assert _violations(spec) == {}
    plan = quantize_plan(spec.quantize)
    assert plan.aware == AwareTrainingConfig(steps=200, lr=1e-4, batch_size=32)
    assert quantize_plan(P.QuantizeSpec(mode=P.QUANTIZE_MODE_STATIC_INT8)).aware is None


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        (_spec(P.QUANTIZE_MODE_DYNAMIC_INT8, P.AwareTrainingSpec(steps=10)), "", "only for mode STATIC_INT8"),
        (
            _spec(P.QUANTIZE_MODE_STATIC_INT8, P.AwareTrainingSpec(steps=10), train=False),
            "",
            "needs data.train",
        ),
        (_spec(P.QUANTIZE_MODE_STATIC_INT8, P.AwareTrainingSpec()), ".steps", "(required)"),
        (
            _spec(P.QUANTIZE_MODE_STATIC_INT8, P.AwareTrainingSpec(steps=5, learning_rate=2.0)),
            ".learning_rate",
            "0 < x < 1",
        ),
        (
            _spec(P.QUANTIZE_MODE_STATIC_INT8, P.AwareTrainingSpec(steps=5, batch_size=-1)),
            ".batch_size",
            "0 to 4096",
        ),
    ],
)
def test_broken_rules_name_the_field(spec: spec_pb2.OptimizationSpec, field: str, text: str) -> None:
    found = _violations(spec)
    key = f"spec.quantize.aware_training{field}"
    assert key in found, found
    assert text in found[key]
