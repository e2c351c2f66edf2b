"""CHANNEL / NEURON configs: defaults, validation, JSON round trip, translation from a ``PruneSpec``."""

from __future__ import annotations

import json

import pytest

from prunekit.spec import SpecRuleError
from prunekit.spec.prune_configs import PRUNE_CONFIGS, PruneConfig
from prunekit.spec.structured_configs import ChannelConfig, NeuronConfig
from prunekit.spec.translate import prune_config
from prunekit.v1 import spec_pb2

P = spec_pb2


def test_both_methods_are_registered_with_described_fields() -> None:
    methods = PRUNE_CONFIGS.as_dict()
    assert methods["channel"] is ChannelConfig
    assert methods["neuron"] is NeuronConfig
    for config_type in (ChannelConfig, NeuronConfig):
        assert all(text for text in config_type.describe().values())


def test_json_round_trip() -> None:
    config = ChannelConfig(
        target_macs_reduction=2.5,
        scope="per_layer",
        importance="taylor",
        round_to=16,
        max_layer_ratio=0.7,
        ignore=("fc*",),
        overrides=(("layer4.*", 0.2), ("stem*", 0.0)),
        steps=4,
        prune_output_layers=True,
        seed=3,
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == "channel"
    assert PruneConfig.from_dict(data) == config
    assert ChannelConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="does not match"):
        NeuronConfig.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"ratio": 0.5, "target_macs_reduction": 2.0}, "exactly one"),
        ({"ratio": 1.0}, "0 < ratio < 1"),
        ({"target_macs_reduction": 0.5}, "target_macs_reduction"),
        ({"target_macs_reduction": 101.0}, "target_macs_reduction"),
        ({"ratio": 0.5, "round_to": 0}, "round_to"),
        ({"ratio": 0.5, "round_to": 2048}, "round_to"),
        ({"ratio": 0.5, "max_layer_ratio": 1.0}, "max_layer_ratio"),
        ({"ratio": 0.5, "steps": 0}, "steps"),
        ({"ratio": 0.5, "scope": "everywhere"}, "scope"),
        ({"ratio": 0.5, "importance": "magic"}, "importance"),
        ({"ratio": 0.5, "ignore": "fc"}, "ignore"),
        ({"ratio": 0.5, "overrides": (("fc", 1.5),)}, "override ratio"),
        ({"ratio": 0.5, "overrides": (("", 0.5),)}, "override patterns"),
    ],
)
def test_invalid_configs_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChannelConfig(**kwargs)  # type: ignore[arg-type]


def test_neuron_does_not_rank_by_batchnorm() -> None:
    with pytest.raises(ValueError, match="importance"):
        NeuronConfig(ratio=0.5, importance="bn_scale")


def test_spec_defaults_and_fields() -> None:
    config = prune_config(P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, ratio=0.3))
    assert config == ChannelConfig(ratio=0.3)
    assert (config.round_to, config.max_layer_ratio, config.steps, config.importance) == (8, 0.9, 1, "l1")
    spec = P.PruneSpec(
        method=P.PRUNE_METHOD_NEURON,
        target_macs_reduction=1.5,
        scope=P.PRUNE_SCOPE_PER_LAYER,
        importance=P.IMPORTANCE_ACTIVATION,
        round_to=1,
        max_layer_ratio=0.5,
        ignore=["head*"],
        overrides=[
            P.LayerOverride(pattern="fc1", ratio=0.25),
            P.LayerOverride(pattern="fc2", ignore=True),
            P.LayerOverride(pattern="ff*"),
        ],
        schedule=P.PRUNE_SCHEDULE_ITERATIVE,
        prune_output_layers=True,
    )
    assert prune_config(spec) == NeuronConfig(
        target_macs_reduction=1.5,
        scope="per_layer",
        importance="activation",
        round_to=1,
        max_layer_ratio=0.5,
        ignore=("head*", "fc2"),
        overrides=(("fc1", 0.25), ("ff*", 0.0)),
        steps=5,
        prune_output_layers=True,
    )


def test_spec_violations_are_all_listed() -> None:
    spec = P.PruneSpec(
        method=P.PRUNE_METHOD_NEURON,
        ratio=0.5,
        target_macs_reduction=2.0,
        importance=P.IMPORTANCE_BN_SCALE,
        round_to=4096,
        steps=3,
        n=2,
        overrides=[P.LayerOverride(pattern="x", ratio=0.5, ignore=True)],
    )
    with pytest.raises(SpecRuleError) as caught:
        prune_config(spec)
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "spec.prune.target_macs_reduction",
        "spec.prune.importance",
        "spec.prune.round_to",
        "spec.prune.steps",
        "spec.prune.n",
        "spec.prune.overrides[0].ratio",
    }
