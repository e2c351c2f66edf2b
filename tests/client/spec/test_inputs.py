"""Declared inputs: scalars (``shape: []``) and fixed ``value``\\ s that must fit their dtype."""

from __future__ import annotations

import pytest

from prunekit import spec_from_dict
from prunekit.spec import spec_violations
from prunekit.spec.inputs import value_problem
from prunekit.v1 import model_pb2, spec_pb2

PRUNE = {"method": "unstructured", "ratio": 0.5}


def _violations(*inputs: dict[str, object]) -> dict[str, str]:
    spec = spec_from_dict({"inputs": list(inputs), "prune": PRUNE})
    return {v.field: v.description for v in spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX)}


def test_a_scalar_input_with_a_fixed_value() -> None:
    spec = spec_from_dict(
        {
            "inputs": [
                {"name": "audio", "shape": [1, 512]},
                {"name": "sr", "shape": [], "dtype": "int64", "value": 16000},
            ],
            "prune": PRUNE,
        }
    )
    assert spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX) == []
    sr = spec.inputs[1]
    assert list(sr.shape) == []
    assert sr.HasField("value")
    assert sr.value == 16000
    assert not spec.inputs[0].HasField("value")


def test_a_value_of_zero_is_a_value() -> None:
    spec = spec_from_dict({"inputs": [{"name": "t", "shape": [1], "value": 0}], "prune": PRUNE})
    assert spec.inputs[0].HasField("value")


@pytest.mark.parametrize(
    ("dtype", "value", "problem"),
    [
        ("bool", 1, "is only for numeric dtypes"),
        ("int64", 0.5, "must be a whole number"),
        ("uint8", 256, "does not fit the input's dtype (0 to 255)"),
        ("int8", -129, "does not fit the input's dtype (-128 to 127)"),
        ("int32", 2**31, "does not fit"),
        ("float16", 70000, "does not fit the input's dtype (at most 65504"),
        ("float32", float("nan"), "must be a finite number"),
    ],
)
def test_values_that_do_not_fit(dtype: str, value: float, problem: str) -> None:
    found = _violations({"name": "x", "shape": [1], "dtype": dtype, "value": value})
    assert list(found) == ["spec.inputs[0].value"]
    assert problem in found["spec.inputs[0].value"]


def test_values_that_fit() -> None:
    assert value_problem(255, model_pb2.DATA_TYPE_UINT8) == ""
    assert value_problem(-3, model_pb2.DATA_TYPE_INT8) == ""
    assert value_problem(0.25, model_pb2.DATA_TYPE_UNSPECIFIED) == ""
    assert value_problem(2**53, model_pb2.DATA_TYPE_INT64) == ""
    assert value_problem(2**53 + 2, model_pb2.DATA_TYPE_INT64) != ""


def test_rank_is_bounded_but_zero_is_allowed() -> None:
    assert _violations({"name": "x", "shape": []}) == {}
    found = _violations({"name": "x", "shape": [1] * 9})
    assert found == {"spec.inputs[0].shape": "must have at most 8 dimensions"}


def test_the_value_round_trips_through_the_proto() -> None:
    item = model_pb2.InputSpec(name="sr", dtype=model_pb2.DATA_TYPE_INT64, value=8000)
    spec = spec_pb2.OptimizationSpec(inputs=[item])
    assert spec_pb2.OptimizationSpec.FromString(spec.SerializeToString()).inputs[0].value == 8000
