"""The DYNAMIC stage of a pipeline run: synthetic inputs when there is no data, and inputs it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.pipeline import OptimizationResult, run_optimization
from tests.zoo import ZOO, export

P = spec_pb2


def _spec(entry_name: str, form: int) -> spec_pb2.OptimizationSpec:
    return P.OptimizationSpec(
        inputs=list(ZOO[entry_name].inputs),
        prune=P.PruneSpec(method=P.PRUNE_METHOD_DYNAMIC, dynamic=P.DynamicSpec(form=form, steps=30)),
        benchmark=P.BenchmarkSpec(warmup=1, iterations=3, max_seconds=0.5),
        evaluation=P.EvaluationSpec(samples=4),
    )


def _run(name: str, form: int, tmp: Path) -> OptimizationResult:
    entry = ZOO[name]
    path = export(entry.build(), entry, tmp / f"{name}.onnx", "legacy", 17)
    return run_optimization(
        path, model_pb2.MODEL_FORMAT_ONNX, _spec(name, form), tmp / "job", lambda *a, **k: None
    )


def test_without_data_the_gates_learn_on_synthetic_inputs_and_say_so(tmp_path: Path) -> None:
    result = _run("resnet", P.DYNAMIC_FORM_EARLY_EXIT, tmp_path)
    report = result.report
    assert "DYNAMIC_SYNTHETIC_INPUTS" in [w.code for w in report.warnings]
    assert report.dynamic.inputs.startswith("128 synthetic samples")
    assert report.dynamic.metric == "top1_agreement"
    assert not report.dynamic.models[0].HasField("accuracy")


def test_an_input_without_a_batch_dimension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServiceError) as caught:
        _run("vad", P.DYNAMIC_FORM_EARLY_EXIT, tmp_path)
    assert caught.value.reason == "DYNAMIC_NOT_APPLICABLE"
    assert "no batch dimension" in caught.value.message


def test_token_skip_distills_calibrates_on_one_half_and_measures_the_other(tmp_path: Path) -> None:
    entry = ZOO["vit"]
    path = export(entry.build(), entry, tmp_path / "vit.onnx", "legacy", 17)
    spec = _spec("vit", P.DYNAMIC_FORM_TOKEN_SKIP)
    spec.prune.dynamic.steps = 5
    result = run_optimization(path, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "job", lambda *a, **k: None)
    d = result.report.dynamic
    if "DYNAMIC_RULE_NOT_MET" in [w.code for w in result.report.warnings]:  # random weights: it may not be
        assert d.distill_steps == 0  # the original layers, with every token, are what ships
    else:
        assert d.distill_steps == 5
    assert d.inputs.startswith("128 synthetic samples")
    assert d.inputs.endswith("measurement half: 64 samples (odd positions)")
    assert d.calibration_inputs.endswith("calibration half: 64 samples (even positions)")
    assert d.calibration_samples == 64
    batch = entry.inputs[0].shape[0]
    assert [m.samples for m in d.models] == [64 // batch] * 2  # feeds of the model's batch
