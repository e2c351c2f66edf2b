"""The DYNAMIC rules: the form and its knobs, the sections DYNAMIC excludes, and the translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit._spec import load_spec
from prunekit.spec import spec_violations
from prunekit.spec.dynamic_configs import DynamicConfig
from prunekit.spec.translate import prune_config
from prunekit.v1 import model_pb2, spec_pb2

P = spec_pb2


def _violations(spec: spec_pb2.OptimizationSpec) -> dict[str, str]:
    return {v.field: v.description for v in spec_violations(spec, model_pb2.MODEL_FORMAT_ONNX)}


def _dynamic(**knobs: object) -> spec_pb2.OptimizationSpec:
    return P.OptimizationSpec(
        prune=P.PruneSpec(method=P.PRUNE_METHOD_DYNAMIC, dynamic=P.DynamicSpec(**knobs))  # type: ignore[arg-type]
    )


def test_an_early_exit_spec_translates_with_defaults() -> None:
    spec = _dynamic(form=P.DYNAMIC_FORM_EARLY_EXIT, exits=["/conv2/Conv"], threshold=0.9)
    assert _violations(spec) == {}
    assert prune_config(spec.prune) == DynamicConfig(exits=("/conv2/Conv",), threshold=0.9)
    assert prune_config(_dynamic(form=P.DYNAMIC_FORM_TOKEN_SKIP, keep_ratio=0.5).prune) == DynamicConfig(
        form="token_skip", keep_ratio=0.5
    )
    frozen = _dynamic(
        form=P.DYNAMIC_FORM_TOKEN_SKIP, frozen_layers=True, token_scorer=P.TOKEN_SCORER_ATTENTION
    )
    assert _violations(frozen) == {}
    assert prune_config(frozen.prune) == DynamicConfig(
        form="token_skip", frozen_layers=True, token_scorer="attention"
    )


@pytest.mark.parametrize(
    ("knobs", "field", "text"),
    [
        ({}, "spec.prune.dynamic.form", "required"),
        (
            {"form": P.DYNAMIC_FORM_EARLY_EXIT, "threshold": 1.5},
            "spec.prune.dynamic.threshold",
            "0 < threshold <= 1",
        ),
        (
            {"form": P.DYNAMIC_FORM_EARLY_EXIT, "threshold": -0.1},
            "spec.prune.dynamic.threshold",
            "0 < threshold",
        ),
        ({"form": P.DYNAMIC_FORM_EARLY_EXIT, "max_exits": 9}, "spec.prune.dynamic.max_exits", "from 1 to 8"),
        (
            {"form": P.DYNAMIC_FORM_EARLY_EXIT, "keep_ratio": 0.5},
            "spec.prune.dynamic.keep_ratio",
            "not used by",
        ),
        (
            {"form": P.DYNAMIC_FORM_TOKEN_SKIP, "keep_ratio": 1.0},
            "spec.prune.dynamic.keep_ratio",
            "0 < keep_ratio",
        ),
        (
            {"form": P.DYNAMIC_FORM_TOKEN_SKIP, "keep_ratio": 0.5, "keep_tokens": 4},
            "spec.prune.dynamic.keep_tokens",
            "not both",
        ),
        ({"form": P.DYNAMIC_FORM_EARLY_EXIT, "steps": -1}, "spec.prune.dynamic.steps", "from 1 to"),
        (
            {"form": P.DYNAMIC_FORM_EARLY_EXIT, "frozen_layers": True},
            "spec.prune.dynamic.frozen_layers",
            "not used by",
        ),
        (
            {"form": P.DYNAMIC_FORM_EARLY_EXIT, "token_scorer": P.TOKEN_SCORER_ATTENTION},
            "spec.prune.dynamic.token_scorer",
            "not used by",
        ),
        (
            {
                "form": P.DYNAMIC_FORM_TOKEN_SKIP,
                "frozen_layers": True,
                "token_scorer": P.TOKEN_SCORER_ATTENTION,
                "steps": 10,
            },
            "spec.prune.dynamic.steps",
            "nothing is trained",
        ),
        (
            {"form": P.DYNAMIC_FORM_EARLY_EXIT, "exits": [""]},
            "spec.prune.dynamic.exits[0]",
            "node or tensor name",
        ),
    ],
)
def test_bad_knobs_are_named(knobs: dict[str, object], field: str, text: str) -> None:
    found = _violations(_dynamic(**knobs))
    assert text in found[field]


def test_dynamic_needs_its_section_and_refuses_other_techniques() -> None:
    bare = P.OptimizationSpec(prune=P.PruneSpec(method=P.PRUNE_METHOD_DYNAMIC, ratio=0.5))
    found = _violations(bare)
    assert "required for DYNAMIC" in found["spec.prune.dynamic"]
    assert "not used by" in found["spec.prune.ratio"]
    spec = _dynamic(form=P.DYNAMIC_FORM_EARLY_EXIT)
    spec.quantize.mode = P.QUANTIZE_MODE_STATIC_INT8
    spec.finetune.steps = 10
    found = _violations(spec)
    assert {"spec.quantize", "spec.finetune"} <= set(found)
    other = P.OptimizationSpec(
        prune=P.PruneSpec(method=P.PRUNE_METHOD_CHANNEL, ratio=0.5, dynamic=P.DynamicSpec(form=1))
    )
    assert "not used by" in _violations(other)["spec.prune.dynamic"]


def test_the_config_refuses_what_the_spec_check_refuses() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DynamicConfig(threshold=2.0)
    with pytest.raises(ValueError, match="form"):
        DynamicConfig(form="gates")  # type: ignore[arg-type]
    assert DynamicConfig.from_dict(DynamicConfig(max_exits=2).to_dict()) == DynamicConfig(max_exits=2)


def test_the_example_spec_loads_and_passes_the_rules() -> None:
    spec = load_spec(Path(__file__).resolve().parents[3] / "examples" / "dynamic.yaml")
    assert spec.prune.method == P.PRUNE_METHOD_DYNAMIC
    assert spec.prune.dynamic.form == P.DYNAMIC_FORM_EARLY_EXIT
    spec.data.train.append(f"prunekit://datasets/{'a' * 64}/data.npz")  # what --train adds
    assert _violations(spec) == {}


def test_token_scorer_and_frozen_layers_load_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "prune:\n  method: dynamic\n  dynamic:\n    form: token_skip\n    token_scorer: attention\n"
        "    frozen_layers: true\n"
    )
    spec = load_spec(path)
    assert spec.prune.dynamic.token_scorer == P.TOKEN_SCORER_ATTENTION
    assert _violations(spec) == {}
    assert prune_config(spec.prune) == DynamicConfig(
        form="token_skip", token_scorer="attention", frozen_layers=True
    )
