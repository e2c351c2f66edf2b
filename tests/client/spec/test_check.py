"""The spec rules (``spec_violations``) the CLI and the server run: every violation listed."""

from __future__ import annotations

import math

import pytest

from prunekit.spec import spec_violations
from prunekit.spec.limits import ANY_SERVER, SpecLimits
from prunekit.v1 import model_pb2, spec_pb2

from .rules import ONNX, PRUNE
from .rules import violations as _violations


def _fields(spec: spec_pb2.OptimizationSpec) -> list[str]:
    return [v.field for v in spec_violations(spec, ONNX)]


@pytest.mark.parametrize(
    "spec",
    [
        spec_pb2.OptimizationSpec(prune=PRUNE),
        spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8)),
        spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_FP16)),
        spec_pb2.OptimizationSpec(
            prune=PRUNE,
            quantize=spec_pb2.QuantizeSpec(
                mode=spec_pb2.QUANTIZE_MODE_AUTO,
                calibration=spec_pb2.CALIBRATION_METHOD_PERCENTILE,
                calibration_samples=1024,
                percentile=99.99,
                include_original=True,
                candidates=[spec_pb2.QUANTIZE_MODE_STATIC_INT8, spec_pb2.QUANTIZE_MODE_FP16],
                exclude=["*fc*"],
            ),
            benchmark=spec_pb2.BenchmarkSpec(
                batch_sizes=[1, 8, 32], max_seconds=120.0, device=spec_pb2.DEVICE_CUDA
            ),
            evaluation=spec_pb2.EvaluationSpec(min_top1_agreement=0.95, min_cosine_similarity=1.0),
        ),
        spec_pb2.OptimizationSpec(
            prune=PRUNE, quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_NONE)
        ),
    ],
    ids=["prune-only", "static-only", "fp16-only", "everything", "prune-and-none"],
)
def test_valid_specs(spec: spec_pb2.OptimizationSpec) -> None:
    assert spec_violations(spec, ONNX) == []


def test_a_spec_must_ask_for_something() -> None:
    assert _fields(spec_pb2.OptimizationSpec()) == ["spec.prune"]
    none = spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_NONE))
    assert _fields(none) == ["spec.prune"]


def test_unspecified_mode_with_fields_lists_every_violation() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            calibration=spec_pb2.CALIBRATION_METHOD_ENTROPY,
            calibration_samples=5000,
            percentile=50.0,
            include_original=True,
            candidates=[spec_pb2.QUANTIZE_MODE_FP16],
            exclude=[""],
        )
    )
    assert sorted(v.field for v in spec_violations(spec, ONNX)) == [
        "spec.quantize.calibration_samples",
        "spec.quantize.candidates",
        "spec.quantize.exclude[0]",
        "spec.quantize.include_original",
        "spec.quantize.mode",
        "spec.quantize.percentile",
    ]


@pytest.mark.parametrize("samples", [-1, 1025, 2**31 - 1])
def test_calibration_samples_out_of_range(samples: int) -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8, calibration_samples=samples)
    )
    assert _fields(spec) == ["spec.quantize.calibration_samples"]


def test_calibration_fields_need_a_calibrating_mode() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8,
            calibration=spec_pb2.CALIBRATION_METHOD_MINMAX,
            calibration_samples=10,
        )
    )
    assert _fields(spec) == ["spec.quantize.calibration", "spec.quantize.calibration_samples"]


@pytest.mark.parametrize(
    ("percentile", "calibration", "message"),
    [
        (89.0, spec_pb2.CALIBRATION_METHOD_PERCENTILE, "between 90 and 100"),
        (100.5, spec_pb2.CALIBRATION_METHOD_PERCENTILE, "between 90 and 100"),
        (math.nan, spec_pb2.CALIBRATION_METHOD_PERCENTILE, "between 90 and 100"),
        (99.0, spec_pb2.CALIBRATION_METHOD_MINMAX, "only with calibration PERCENTILE"),
    ],
)
def test_percentile_rules(percentile: float, calibration: int, message: str) -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8,
            calibration=calibration,  # type: ignore[arg-type]
            percentile=percentile,
        )
    )
    (violation,) = spec_violations(spec, ONNX)
    assert violation.field == "spec.quantize.percentile"
    assert message in violation.description


def test_auto_candidates() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_AUTO,
            candidates=[
                spec_pb2.QUANTIZE_MODE_FP16,
                spec_pb2.QUANTIZE_MODE_AUTO,
                spec_pb2.QUANTIZE_MODE_FP16,
                spec_pb2.QUANTIZE_MODE_NONE,
            ],
        )
    )
    assert _fields(spec) == [
        "spec.quantize.candidates[1]",
        "spec.quantize.candidates[2]",
        "spec.quantize.candidates[3]",
    ]


def test_none_mode_takes_no_options() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE,
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_NONE, exclude=["x"], calibration_samples=3
        ),
    )
    assert _fields(spec) == ["spec.quantize.calibration_samples", "spec.quantize.exclude"]


def test_include_original_needs_prune() -> None:
    spec = spec_pb2.OptimizationSpec(
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_STATIC_INT8, include_original=True)
    )
    assert _fields(spec) == ["spec.quantize.include_original"]


def test_benchmark_and_evaluation_rules() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE,
        benchmark=spec_pb2.BenchmarkSpec(batch_size=2, batch_sizes=[1, 0, 1, 5000], max_seconds=-1.0),
        evaluation=spec_pb2.EvaluationSpec(min_top1_agreement=1.5, min_cosine_similarity=-0.1),
    )
    assert _fields(spec) == [
        "spec.benchmark.batch_sizes",
        "spec.benchmark.batch_sizes[1]",
        "spec.benchmark.batch_sizes[2]",
        "spec.benchmark.batch_sizes[3]",
        "spec.benchmark.max_seconds",
        "spec.evaluation.min_top1_agreement",
        "spec.evaluation.min_cosine_similarity",
    ]
    too_many = spec_pb2.OptimizationSpec(
        prune=PRUNE, benchmark=spec_pb2.BenchmarkSpec(batch_sizes=range(1, 10))
    )
    assert _fields(too_many) == ["spec.benchmark.batch_sizes"]
    for seconds in (math.inf, 3601.0):
        slow = spec_pb2.OptimizationSpec(prune=PRUNE, benchmark=spec_pb2.BenchmarkSpec(max_seconds=seconds))
        assert _fields(slow) == ["spec.benchmark.max_seconds"]


def test_undefined_enum_values_are_named() -> None:
    spec = spec_pb2.OptimizationSpec(quantize=spec_pb2.QuantizeSpec(mode=99))  # type: ignore[arg-type]
    spec.benchmark.device = 7  # type: ignore[assignment]
    fields = _fields(spec)
    assert "spec.quantize.mode" in fields
    assert "spec.benchmark.device" in fields


def test_prune_rules_still_apply_next_to_quantize() -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(ratio=1.5),
        quantize=spec_pb2.QuantizeSpec(mode=spec_pb2.QUANTIZE_MODE_FP16),
    )
    assert _fields(spec) == ["spec.prune.method", "spec.prune.ratio"]


def test_a_servers_input_bytes_cap() -> None:
    inputs = [
        model_pb2.InputSpec(name="image", shape=[8, 3, 224, 224]),
        model_pb2.InputSpec(name="mask", shape=[8, 224, 224], dtype=model_pb2.DATA_TYPE_UINT8),
    ]
    spec = spec_pb2.OptimizationSpec(prune=PRUNE, inputs=inputs)
    total = 8 * 3 * 224 * 224 * 4 + 8 * 224 * 224
    assert _violations(spec, SpecLimits(max_input_bytes=total)) == {}
    assert _violations(spec, SpecLimits(max_input_bytes=total - 1)) == {
        "spec.inputs": [
            f"one batch of the inputs takes {total} bytes ('image': 1204224 elements); "
            f"this server allows at most {total - 1} (max_input_bytes)"
        ]
    }


@pytest.mark.parametrize(
    ("seconds", "limits", "message"),
    [
        (-1.0, ANY_SERVER, "seconds, > 0 (or 0: the server's job timeout), got -1.0"),
        (math.nan, ANY_SERVER, "seconds, > 0 (or 0: the server's job timeout), got nan"),
        (7200.0, SpecLimits(max_timeout_seconds=3600.0), "at most 3600 on this server (job_timeout_s)"),
    ],
)
def test_timeout_seconds_rules(seconds: float, limits: SpecLimits, message: str) -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5),
        timeout_seconds=seconds,
    )
    found = spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX, limits=limits)
    assert [(v.field, v.description) for v in found] == [("spec.timeout_seconds", message)]
    spec.timeout_seconds = 60.0
    assert spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX, limits=limits) == []
