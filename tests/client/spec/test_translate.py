"""From spec messages to technique configs: defaults applied, every rule checked, AUTO expanded."""

from __future__ import annotations

import pytest

from prunekit.spec import SpecRuleError
from prunekit.spec.prune_configs import NMConfig, UnstructuredConfig
from prunekit.spec.quantize import AUTO_CANDIDATES
from prunekit.spec.quantize_configs import DynamicInt8Config, Fp16Config, StaticInt8Config
from prunekit.spec.translate import prune_config, quantize_config, quantize_plan
from prunekit.v1 import spec_pb2

P = spec_pb2


def test_auto_candidates_are_every_concrete_mode_in_enum_order() -> None:
    assert list(AUTO_CANDIDATES) == [
        P.QUANTIZE_MODE_STATIC_INT8,
        P.QUANTIZE_MODE_DYNAMIC_INT8,
        P.QUANTIZE_MODE_FP16,
    ]


def test_quantize_config_per_mode() -> None:
    q = P.QuantizeSpec(
        calibration=P.CALIBRATION_METHOD_PERCENTILE, calibration_samples=20, percentile=99.5, exclude=["fc"]
    )
    static = quantize_config(q, P.QUANTIZE_MODE_STATIC_INT8)
    assert static == StaticInt8Config(
        calibration="percentile", calibration_samples=20, percentile=99.5, exclude=("fc",)
    )
    assert quantize_config(q, P.QUANTIZE_MODE_FP16) == Fp16Config(exclude=("fc",))
    with pytest.raises(SpecRuleError) as err:
        quantize_config(q, P.QUANTIZE_MODE_AUTO)
    assert [v.field for v in err.value.violations] == ["spec.quantize.mode"]
    with pytest.raises(SpecRuleError) as err:
        quantize_config(P.QuantizeSpec(percentile=50.0), P.QUANTIZE_MODE_STATIC_INT8)
    assert [v.field for v in err.value.violations] == ["spec.quantize"]
    assert "percentile" in err.value.violations[0].description


def test_plans() -> None:
    assert quantize_plan(P.QuantizeSpec(mode=P.QUANTIZE_MODE_NONE)).configs == ()
    assert quantize_plan(P.QuantizeSpec()).configs == ()
    single = quantize_plan(P.QuantizeSpec(mode=P.QUANTIZE_MODE_FP16))
    assert (single.configs, single.auto) == ((Fp16Config(),), False)
    auto = quantize_plan(P.QuantizeSpec(mode=P.QUANTIZE_MODE_AUTO, calibration_samples=9))
    assert auto.auto
    assert auto.configs == (StaticInt8Config(calibration_samples=9), DynamicInt8Config(), Fp16Config())
    chosen = quantize_plan(
        P.QuantizeSpec(
            mode=P.QUANTIZE_MODE_AUTO, candidates=[P.QUANTIZE_MODE_FP16, P.QUANTIZE_MODE_STATIC_INT8]
        )
    )
    assert chosen.configs == (Fp16Config(), StaticInt8Config())


def test_prune_config_applies_defaults_and_lists_every_violation() -> None:
    assert prune_config(P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5)) == UnstructuredConfig(
        ratio=0.5
    )
    n_m = P.PruneSpec(method=P.PRUNE_METHOD_N_M, ignore=["a*"])
    n_m.overrides.add(pattern="b*", ignore=True)
    assert prune_config(n_m) == NMConfig(ignore=("a*", "b*"))
    with pytest.raises(SpecRuleError) as err:
        prune_config(P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=1.5, n=3), path="p")
    assert [v.field for v in err.value.violations] == ["p.n", "p.ratio"]
    bad_scope = P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5)
    bad_scope.scope = 9  # type: ignore[assignment]
    with pytest.raises(SpecRuleError) as err:
        prune_config(bad_scope)
    assert [v.field for v in err.value.violations] == ["spec.prune.scope"]
