"""The rules of ``target`` (a measured latency goal) and its config, as the CLI and the server run them."""

from __future__ import annotations

import pytest

from prunekit.spec import spec_violations
from prunekit.spec.target import DEFAULT_BUDGET_SECONDS, TargetConfig, target_config
from prunekit.spec.violation import SpecRuleError
from prunekit.v1 import model_pb2, spec_pb2

ONNX = model_pb2.MODEL_FORMAT_ONNX
P = spec_pb2


def _violations(spec: P.OptimizationSpec) -> dict[str, str]:
    return {v.field: v.description for v in spec_violations(spec, ONNX)}


def test_a_speedup_alone_is_a_whole_spec_and_takes_every_default() -> None:
    spec = P.OptimizationSpec(target=P.TargetSpec(latency_speedup=2.0))
    assert _violations(spec) == {}
    assert target_config(spec) == TargetConfig(speedup=2.0)
    assert target_config(spec).budget_seconds == DEFAULT_BUDGET_SECONDS


def test_a_prune_section_gives_the_method_and_its_settings_without_a_ratio() -> None:
    spec = P.OptimizationSpec(
        target=P.TargetSpec(
            latency_ms=4.5, techniques=["neuron", "dynamic_int8"], budget_seconds=60, required=True
        ),
        prune=P.PruneSpec(method=P.PRUNE_METHOD_NEURON, ignore=["*head*"], max_layer_ratio=0.5),
    )
    assert _violations(spec) == {}
    config = target_config(spec)
    assert (config.latency_ms, config.pruning, config.quantization) == (4.5, ("neuron",), ("dynamic_int8",))
    assert config.required
    assert config.budget_seconds == 60


@pytest.mark.parametrize(
    ("target", "field", "words"),
    [
        (P.TargetSpec(), "spec.target.latency_speedup", "set latency_speedup"),
        (P.TargetSpec(latency_speedup=2.0, latency_ms=3.0), "spec.target.latency_ms", "not both"),
        (P.TargetSpec(latency_speedup=100.0), "spec.target.latency_speedup", "x <= 20"),
        (P.TargetSpec(latency_speedup=0.5), "spec.target.latency_speedup", "1 < x"),
        (P.TargetSpec(latency_speedup=float("nan")), "spec.target.latency_speedup", "nan"),
        (P.TargetSpec(latency_ms=-1.0), "spec.target.latency_ms", "0 < x"),
        (
            P.TargetSpec(latency_speedup=2, budget_seconds=5),
            "spec.target.budget_seconds",
            "time one candidate",
        ),
        (
            P.TargetSpec(latency_speedup=2, techniques=["lowrank"]),
            "spec.target.techniques[0]",
            "unknown technique",
        ),
        (
            P.TargetSpec(latency_speedup=2, techniques=["channel", "channel"]),
            "spec.target.techniques[1]",
            "listed twice",
        ),
        (
            P.TargetSpec(latency_speedup=2, techniques=["fp16"]),
            "spec.target.techniques[0]",
            "only with device CUDA",
        ),
        (
            P.TargetSpec(latency_speedup=2, max_accuracy_drop=0.01),
            "spec.target.max_accuracy_drop",
            "needs data",
        ),
        (
            P.TargetSpec(latency_speedup=2, max_accuracy_drop=2.0),
            "spec.target.max_accuracy_drop",
            "0 < value",
        ),
    ],
)
def test_a_bad_target_names_its_field(target: P.TargetSpec, field: str, words: str) -> None:
    problems = _violations(P.OptimizationSpec(target=target))
    assert field in problems, problems
    assert words in problems[field]
    with pytest.raises(SpecRuleError):
        target_config(P.OptimizationSpec(target=target))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"prune": P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, ratio=0.5)}, "spec.prune.ratio"),
        ({"prune": P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED)}, "spec.prune.method"),
        (
            {"prune": P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, schedule=P.PRUNE_SCHEDULE_ITERATIVE)},
            "spec.prune.schedule",
        ),
        ({"quantize": P.QuantizeSpec(mode=P.QUANTIZE_MODE_STATIC_INT8)}, "spec.quantize"),
    ],
)
def test_what_the_search_decides_may_not_be_set_elsewhere(extra: dict[str, object], field: str) -> None:
    spec = P.OptimizationSpec(target=P.TargetSpec(latency_speedup=2.0), **extra)  # type: ignore[arg-type]
    assert field in _violations(spec)


def test_a_prune_method_outside_the_techniques_is_a_contradiction() -> None:
    spec = P.OptimizationSpec(
        target=P.TargetSpec(latency_speedup=2.0, techniques=["channel"]),
        prune=P.PruneSpec(method=P.PRUNE_METHOD_NEURON),
    )
    assert "not among the techniques" in _violations(spec)["spec.target.techniques"]


def test_fp16_is_a_default_only_on_cuda() -> None:
    cpu = target_config(P.OptimizationSpec(target=P.TargetSpec(latency_speedup=2.0)))
    cuda = target_config(
        P.OptimizationSpec(
            target=P.TargetSpec(latency_speedup=2.0), benchmark=P.BenchmarkSpec(device=P.DEVICE_CUDA)
        )
    )
    assert "fp16" not in cpu.quantization
    assert "fp16" in cuda.quantization


def test_fine_tuning_may_follow_a_target_instead_of_a_prune_section() -> None:
    spec = P.OptimizationSpec(
        target=P.TargetSpec(latency_speedup=2.0),
        finetune=P.FinetuneSpec(steps=10),
        data=P.DataSpec(train=["file:///x/datasets/a.npz"]),
    )
    assert not any(f.startswith("spec.finetune") for f in _violations(spec))


def test_layer_is_a_technique_but_not_a_prune_method_of_a_target() -> None:
    spec = P.OptimizationSpec(target=P.TargetSpec(latency_speedup=2.0, techniques=["Layer", "channel"]))
    assert _violations(spec) == {}
    assert target_config(spec).pruning == ("layer", "channel")
    with_method = P.OptimizationSpec(
        target=P.TargetSpec(latency_speedup=2.0, techniques=["layer"]),
        prune=P.PruneSpec(method=P.PRUNE_METHOD_LAYER),
    )
    assert "CHANNEL or NEURON" in _violations(with_method)["spec.prune.method"]
