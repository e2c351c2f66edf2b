"""The LOW_RANK rules and the WANDA / SPARSEGPT importance rules, and their translation into configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit import spec_from_dict
from prunekit._spec import load_spec
from prunekit.spec import SpecRuleError, spec_violations
from prunekit.spec.low_rank_configs import LowRankConfig
from prunekit.spec.prune_configs import NMConfig, UnstructuredConfig
from prunekit.spec.structured_configs import ChannelConfig, LayerConfig, NeuronConfig
from prunekit.spec.translate import prune_config
from prunekit.v1 import model_pb2, spec_pb2

P = spec_pb2


def _violations(prune: spec_pb2.PruneSpec) -> dict[str, str]:
    spec = spec_pb2.OptimizationSpec(prune=prune)
    return {v.field: v.description for v in spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX)}


def test_each_low_rank_goal_translates_into_its_config() -> None:
    energy = P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, low_rank=P.LowRankSpec(energy=0.9), ignore=["fc*"])
    assert _violations(energy) == {}
    assert prune_config(energy) == LowRankConfig(energy=0.9, ignore=("fc*",))
    macs = P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, target_macs_reduction=2.0, prune_output_layers=True)
    assert prune_config(macs) == LowRankConfig(target_macs_reduction=2.0, prune_output_layers=True)
    ratio = P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, ratio=0.5)
    assert prune_config(ratio) == LowRankConfig(ratio=0.5)


def test_the_conv_factorization_translates_and_an_undefined_one_is_named() -> None:
    spec = spec_from_dict({"prune": {"method": "low_rank", "low_rank": {"energy": 0.9, "conv": "spatial"}}})
    assert prune_config(spec.prune) == LowRankConfig(energy=0.9, conv="spatial")
    auto = P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, low_rank=P.LowRankSpec(energy=0.9, conv=3))
    assert prune_config(auto) == LowRankConfig(energy=0.9, conv="auto")
    undefined = P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, low_rank=P.LowRankSpec(energy=0.9, conv=9))
    assert "spec.prune.low_rank.conv" in _violations(undefined)


@pytest.mark.parametrize(
    ("prune", "field", "text"),
    [
        (P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK), "spec.prune.ratio", "set exactly one of"),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, ratio=0.5, low_rank=P.LowRankSpec(energy=0.9)),
            "spec.prune.low_rank.energy",
            "not several",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, low_rank=P.LowRankSpec(energy=1.5)),
            "spec.prune.low_rank.energy",
            "0 < energy < 1",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_LOW_RANK, ratio=0.5, importance=P.IMPORTANCE_L1),
            "spec.prune.importance",
            "not used by PRUNE_METHOD_LOW_RANK",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, ratio=0.5, low_rank=P.LowRankSpec(energy=0.9)),
            "spec.prune.low_rank",
            "not used by PRUNE_METHOD_CHANNEL",
        ),
        (
            P.PruneSpec(
                method=P.PRUNE_METHOD_LOW_RANK, ratio=0.5, overrides=[P.LayerOverride(pattern="a", ratio=0.2)]
            ),
            "spec.prune.overrides[0]",
            "may only ignore",
        ),
        (
            P.PruneSpec(
                method=P.PRUNE_METHOD_UNSTRUCTURED,
                ratio=0.5,
                importance=P.IMPORTANCE_WANDA,
                scope=P.PRUNE_SCOPE_GLOBAL,
            ),
            "spec.prune.scope",
            "within each layer",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_LAYER, ratio=0.5, importance=P.IMPORTANCE_SPARSEGPT),
            "spec.prune.importance",
            "applies to unstructured, n_m, channel, neuron only, not to layer",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.5, importance=P.IMPORTANCE_WANDA),
            "spec.prune.importance",
            "'wanda' reads each layer's calibration inputs",
        ),
    ],
)
def test_broken_rules_name_the_field(prune: spec_pb2.PruneSpec, field: str, text: str) -> None:
    found = _violations(prune)
    assert field in found, found
    assert text in found[field]
    with pytest.raises(SpecRuleError):
        prune_config(prune)


def test_wanda_and_sparsegpt_pick_the_criterion_and_default_to_per_layer() -> None:
    wanda = P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5, importance=P.IMPORTANCE_WANDA)
    assert prune_config(wanda) == UnstructuredConfig(ratio=0.5, scope="per_layer", importance="wanda")
    sparsegpt = P.PruneSpec(method=P.PRUNE_METHOD_N_M, importance=P.IMPORTANCE_SPARSEGPT)
    assert prune_config(sparsegpt) == NMConfig(importance="sparsegpt")
    l2 = P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5, importance=P.IMPORTANCE_L2)
    assert prune_config(l2) == UnstructuredConfig(ratio=0.5)
    with pytest.raises(ValueError, match="scope per_layer"):
        UnstructuredConfig(ratio=0.5, importance="wanda")
    with pytest.raises(ValueError, match="importance must be one of"):
        NMConfig(importance="taylor")  # type: ignore[arg-type]


def test_channel_and_neuron_take_wanda_and_sparsegpt_in_either_scope() -> None:
    sparsegpt = P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, ratio=0.3, importance=P.IMPORTANCE_SPARSEGPT)
    assert _violations(sparsegpt) == {}
    assert prune_config(sparsegpt) == ChannelConfig(ratio=0.3, importance="sparsegpt")
    wanda = P.PruneSpec(
        method=P.PRUNE_METHOD_NEURON, ratio=0.3, importance=P.IMPORTANCE_WANDA, scope=P.PRUNE_SCOPE_PER_LAYER
    )
    assert _violations(wanda) == {}
    assert prune_config(wanda) == NeuronConfig(ratio=0.3, importance="wanda", scope="per_layer")
    assert ChannelConfig(ratio=0.3, importance="sparsegpt").data_driven
    with pytest.raises(ValueError, match="applies to unstructured, n_m, channel, neuron only"):
        LayerConfig(ratio=0.3, importance="wanda")  # type: ignore[arg-type]


def test_the_channel_example_spec_loads_and_passes_the_rules() -> None:
    spec = load_spec(Path(__file__).resolve().parents[3] / "examples" / "one_shot_channels.yaml")
    assert _violations(spec.prune) == {}
    assert prune_config(spec.prune) == ChannelConfig(ratio=0.3, importance="sparsegpt", round_to=1)
