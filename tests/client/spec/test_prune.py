"""The per-method prune rules, and their agreement with the translation into each method's config."""

from __future__ import annotations

import itertools

import pytest

from prunekit.spec import SpecRuleError, spec_violations
from prunekit.spec.translate import prune_config
from prunekit.v1 import model_pb2, spec_pb2

P = spec_pb2
METHODS = [m for m in P.PruneMethod.values() if m != P.PRUNE_METHOD_UNSPECIFIED]


def _violations(prune: spec_pb2.PruneSpec) -> dict[str, str]:
    spec = spec_pb2.OptimizationSpec(prune=prune)
    return {v.field: v.description for v in spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX)}


@pytest.mark.parametrize(
    "prune",
    [
        P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5, scope=P.PRUNE_SCOPE_PER_LAYER),
        P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, target_macs_reduction=2.0, round_to=16),
        P.PruneSpec(
            method=P.PRUNE_METHOD_CHANNEL,
            ratio=0.3,
            importance=P.IMPORTANCE_BN_SCALE,
            max_layer_ratio=0.5,
            schedule=P.PRUNE_SCHEDULE_ITERATIVE,
            steps=10,
            overrides=[
                P.LayerOverride(pattern="fc*", ignore=True),
                P.LayerOverride(pattern="l4*", ratio=0.1),
            ],
            prune_output_layers=True,
        ),
        P.PruneSpec(method=P.PRUNE_METHOD_NEURON, ratio=0.5, overrides=[P.LayerOverride(pattern="ff*")]),
        P.PruneSpec(method=P.PRUNE_METHOD_N_M),
        P.PruneSpec(method=P.PRUNE_METHOD_N_M, n=1, m=8, ratio=0.875),
        P.PruneSpec(method=P.PRUNE_METHOD_LAYER, target_macs_reduction=1.5, auto_ratios=True),
        P.PruneSpec(method=P.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.25, importance=P.IMPORTANCE_TAYLOR),
    ],
    ids=["unstructured", "channel-macs", "channel-everything", "neuron", "n_m", "n_m-1:8", "layer", "heads"],
)
def test_valid_prune_specs(prune: spec_pb2.PruneSpec) -> None:
    assert _violations(prune) == {}


def test_every_structured_rule_is_listed_at_once() -> None:
    prune = P.PruneSpec(
        method=P.PRUNE_METHOD_CHANNEL,
        ratio=0.5,
        target_macs_reduction=150.0,
        round_to=2000,
        max_layer_ratio=1.0,
        steps=3,
        n=2,
        ignore=["", "x" * 300],
        overrides=[
            P.LayerOverride(pattern="", ratio=0.5),
            P.LayerOverride(pattern="a", ratio=1.5),
            P.LayerOverride(pattern="b", ratio=0.5, ignore=True),
        ],
    )
    assert set(_violations(prune)) == {
        "spec.prune.n",
        "spec.prune.target_macs_reduction",
        "spec.prune.round_to",
        "spec.prune.max_layer_ratio",
        "spec.prune.steps",
        "spec.prune.ignore[0]",
        "spec.prune.ignore[1]",
        "spec.prune.overrides[0].pattern",
        "spec.prune.overrides[1].ratio",
        "spec.prune.overrides[2].ratio",
    }


@pytest.mark.parametrize(
    ("prune", "field", "words"),
    [
        (P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL), "spec.prune.ratio", "target_macs_reduction"),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, target_macs_reduction=2.0),
            "spec.prune.ratio",
            "ratio",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5, target_macs_reduction=2.0),
            "spec.prune.target_macs_reduction",
            "not used by PRUNE_METHOD_UNSTRUCTURED",
        ),
        (P.PruneSpec(method=P.PRUNE_METHOD_N_M, n=4, m=4), "spec.prune.n", "m - 1"),
        (P.PruneSpec(method=P.PRUNE_METHOD_N_M, m=65), "spec.prune.m", "64"),
        (P.PruneSpec(method=P.PRUNE_METHOD_N_M, ratio=0.3), "spec.prune.ratio", "1 - n/m"),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_NEURON, ratio=0.5, importance=P.IMPORTANCE_BN_SCALE),
            "spec.prune.importance",
            "does not apply",
        ),
        (
            P.PruneSpec(method=P.PRUNE_METHOD_LAYER, ratio=0.5, round_to=8),
            "spec.prune.round_to",
            "not used by PRUNE_METHOD_LAYER",
        ),
        (
            P.PruneSpec(
                method=P.PRUNE_METHOD_LAYER, ratio=0.5, overrides=[P.LayerOverride(pattern="a", ratio=0.2)]
            ),
            "spec.prune.overrides[0]",
            "may only ignore",
        ),
        (
            P.PruneSpec(
                method=P.PRUNE_METHOD_ATTENTION_HEAD, ratio=0.5, overrides=[P.LayerOverride(pattern="a")]
            ),
            "spec.prune.overrides[0].ratio",
            "ratio",
        ),
        (
            P.PruneSpec(
                method=P.PRUNE_METHOD_CHANNEL, ratio=0.5, steps=2, schedule=P.PRUNE_SCHEDULE_ONE_SHOT
            ),
            "spec.prune.steps",
            "ITERATIVE",
        ),
        (
            P.PruneSpec(
                method=P.PRUNE_METHOD_CHANNEL, ratio=0.5, overrides=[P.LayerOverride(pattern="a")] * 257
            ),
            "spec.prune.overrides",
            "at most 256",
        ),
    ],
)
def test_single_rules(prune: spec_pb2.PruneSpec, field: str, words: str) -> None:
    found = _violations(prune)
    assert field in found, found
    assert words in found[field]


def _variants(method: int) -> list[spec_pb2.PruneSpec]:
    """Specs of ``method`` setting each field (alone, on top of a target) to a typical value."""
    bases = [P.PruneSpec(method=method, ratio=0.5), P.PruneSpec(method=method, target_macs_reduction=2.0)]
    if method == P.PRUNE_METHOD_N_M:
        bases.append(P.PruneSpec(method=method))
    edits: list[dict[str, object]] = [
        {},
        {"scope": P.PRUNE_SCOPE_PER_LAYER},
        {"round_to": 16},
        {"max_layer_ratio": 0.5},
        {"schedule": P.PRUNE_SCHEDULE_ITERATIVE},
        {"schedule": P.PRUNE_SCHEDULE_ITERATIVE, "steps": 3},
        {"n": 1, "m": 4},
        {"auto_ratios": True},
        {"prune_output_layers": True},
        {"ignore": ["fc*"]},
        *({"importance": i} for i in P.Importance.values() if i),
    ]
    out = []
    for base, edit in itertools.product(bases, edits):
        spec = P.PruneSpec()
        spec.CopyFrom(base)
        for key, value in edit.items():
            if key == "ignore":
                spec.ignore.extend(value)  # type: ignore[arg-type]
            else:
                setattr(spec, key, value)
        out.append(spec)
    for ratio, ignore in ((0.0, False), (0.3, False), (0.0, True)):
        spec = P.PruneSpec(method=method, ratio=0.5)
        spec.overrides.append(P.LayerOverride(pattern="a*", ratio=ratio, ignore=ignore))
        out.append(spec)
    return out


@pytest.mark.parametrize("method", METHODS, ids=[P.PruneMethod.Name(m) for m in METHODS])
def test_the_server_accepts_exactly_what_the_method_accepts(method: int) -> None:
    """The spec rules and the config built by the translation (its own checks) agree on every variant."""
    disagreements = []
    for prune in _variants(method):
        server_ok = not _violations(prune)
        try:
            prune_config(prune)
            worker_ok = True
        except SpecRuleError:
            worker_ok = False
        if server_ok != worker_ok:
            disagreements.append((str(prune).replace("\n", " "), server_ok, worker_ok))
    assert disagreements == []
