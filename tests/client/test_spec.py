"""Spec files: YAML and JSON, enum names in any form at any depth, and every problem reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunekit import SpecError, load_spec, spec_from_dict, spec_to_dict
from prunekit._spec import load_checked_spec
from prunekit.spec.names import enum_short_name
from prunekit.v1 import model_pb2, spec_pb2

YAML_SPEC = """\
inputs:
  - name: x
    shape: [1, 3, 224, 224]
    dtype: float32
  - name: mask
    shape: [1, 224]
    dtype: INT64
prune:
  method: unstructured
  ratio: 0.5
  scope: Per_Layer
  ignore: ["fc*", "head.*"]
benchmark:
  batch_size: 1
  threads: 2
  warmup: 5
  iterations: 20
evaluation:
  samples: 16
  seed: 7
"""


def test_yaml_spec(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(YAML_SPEC)
    spec = load_spec(path)
    assert [i.name for i in spec.inputs] == ["x", "mask"]
    assert list(spec.inputs[0].shape) == [1, 3, 224, 224]
    assert spec.inputs[0].dtype == model_pb2.DATA_TYPE_FLOAT32
    assert spec.inputs[1].dtype == model_pb2.DATA_TYPE_INT64
    assert spec.prune.method == spec_pb2.PRUNE_METHOD_UNSTRUCTURED
    assert spec.prune.ratio == 0.5
    assert spec.prune.scope == spec_pb2.PRUNE_SCOPE_PER_LAYER
    assert list(spec.prune.ignore) == ["fc*", "head.*"]
    assert (spec.benchmark.threads, spec.benchmark.iterations) == (2, 20)
    assert (spec.evaluation.samples, spec.evaluation.seed) == (16, 7)


@pytest.mark.parametrize("suffix", [".json", ".spec"])
def test_json_spec_by_suffix_or_sniffing(tmp_path: Path, suffix: str) -> None:
    data = {
        "inputs": [{"name": "x", "shape": [1, 8], "dtype": "DATA_TYPE_FLOAT16"}],
        "prune": {"method": "PRUNE_METHOD_UNSTRUCTURED", "ratio": 0.25, "scope": "global"},
    }
    path = tmp_path / f"spec{suffix}"
    path.write_text(json.dumps(data, indent=2))
    spec = load_spec(path)
    assert spec.inputs[0].dtype == model_pb2.DATA_TYPE_FLOAT16
    assert spec.prune.scope == spec_pb2.PRUNE_SCOPE_GLOBAL
    assert spec.prune.ratio == 0.25


@pytest.mark.parametrize(
    ("method", "scope", "dtype"),
    [
        ("unstructured", "per_layer", "float32"),
        ("UNSTRUCTURED", "PER_LAYER", "FLOAT32"),
        ("Unstructured", "Per_Layer", "Float32"),
        ("PRUNE_METHOD_UNSTRUCTURED", "PRUNE_SCOPE_PER_LAYER", "DATA_TYPE_FLOAT32"),
        ("prune_method_unstructured", "prune_scope_per_layer", "data_type_float32"),
        ("unstructured", "per-layer", " float32 "),
    ],
)
def test_enum_names_in_any_form(method: str, scope: str, dtype: str) -> None:
    spec = spec_from_dict(
        {"prune": {"method": method, "scope": scope, "ratio": 0.1}, "inputs": [{"name": "x", "dtype": dtype}]}
    )
    assert spec.prune.method == spec_pb2.PRUNE_METHOD_UNSTRUCTURED
    assert spec.prune.scope == spec_pb2.PRUNE_SCOPE_PER_LAYER
    assert spec.inputs[0].dtype == model_pb2.DATA_TYPE_FLOAT32


def test_every_problem_is_listed_with_its_path() -> None:
    bad = {
        "prune": {"ratoi": 0.5, "method": "structured-ish", "scope": 2, "ratio": "50%"},
        "inputs": [{"name": "x", "shape": [1, "a"], "dtype": "flaot32"}, {"nmae": "y"}, None],
        "benchmark": {"threads": True, "iterations": 2**40},
        "evaluaton": {},
        "evaluation": [],
    }
    with pytest.raises(SpecError) as info:
        spec_from_dict(bad)
    problems = dict(info.value.problems)
    assert problems["prune.ratoi"] == "unknown field (did you mean 'ratio'?)"
    assert "unknown value 'structured-ish'" in problems["prune.method"]
    assert "unstructured" in problems["prune.method"]
    assert "expected one of global, per_layer" in problems["prune.scope"]
    assert problems["prune.ratio"] == "expected a number; got a string ('50%')"
    assert problems["inputs[0].shape[1]"].startswith("expected an integer")
    assert "did you mean 'float32'?" in problems["inputs[0].dtype"]
    assert problems["inputs[1].nmae"] == "unknown field (did you mean 'name'?)"
    assert problems["inputs[2]"] == "expected a mapping; got null"
    assert problems["benchmark.threads"] == "expected an integer; got a boolean (true)"
    assert "out of range" in problems["benchmark.iterations"]
    assert problems["evaluaton"] == "unknown field (did you mean 'evaluation'?)"
    assert problems["evaluation"] == "expected a mapping; got a list"
    assert len(info.value.problems) == 12
    text = str(info.value)
    assert "12 problems" in text
    assert "  - prune.ratoi: unknown field (did you mean 'ratio'?)" in text


def test_unknown_field_without_a_close_match() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict({"zzz": 1})
    assert info.value.problems == [("zzz", "unknown field")]


def test_numbers_only_no_coercion() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_dict({"prune": {"ratio": "0.5"}, "benchmark": {"threads": 2.5}, "inputs": [{"name": 3}]})
    assert [p for p, _ in info.value.problems] == ["prune.ratio", "benchmark.threads", "inputs[0].name"]
    assert spec_from_dict({"prune": {"ratio": 1}}).prune.ratio == 1.0


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("prune:\n  ratoi: 0.5\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert info.value.code_name == "INVALID_ARGUMENT"
    assert info.value.reason == "INVALID_SPEC"


def test_syntax_errors_and_duplicates(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("prune: [unclosed\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(broken)
    dup = tmp_path / "dup.yaml"
    dup.write_text("prune:\n  ratio: 0.5\n  ratio: 0.6\n")
    with pytest.raises(SpecError, match="duplicate key 'ratio'"):
        load_spec(dup)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"prune": }')
    with pytest.raises(SpecError, match="invalid JSON"):
        load_spec(bad_json)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="top level"):
        load_spec(top)


def test_empty_file_and_null_sections(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_spec(empty) == spec_pb2.OptimizationSpec()
    spec = spec_from_dict({"finetune": None})
    assert spec.HasField("finetune")


def test_spec_to_dict_round_trips_with_short_names(tmp_path: Path) -> None:
    path = tmp_path / "spec.yml"
    path.write_text(YAML_SPEC)
    spec = load_spec(path)
    shown = spec_to_dict(spec)
    assert shown["prune"]["method"] == "unstructured"
    assert shown["prune"]["scope"] == "per_layer"
    assert shown["inputs"][1]["dtype"] == "int64"
    assert shown["evaluation"]["seed"] == 7
    assert spec_from_dict(shown) == spec


def test_short_name_uses_the_enum_prefix() -> None:
    assert enum_short_name(spec_pb2.PruneScope.DESCRIPTOR, spec_pb2.PRUNE_SCOPE_PER_LAYER) == "per_layer"
    assert enum_short_name(model_pb2.DataType.DESCRIPTOR, model_pb2.DATA_TYPE_BFLOAT16) == "bfloat16"
    assert enum_short_name(model_pb2.DataType.DESCRIPTOR, 99) == "99"


QUANTIZE_YAML = """\
quantize:
  mode: auto
  calibration: Percentile
  calibration_samples: 128
  percentile: 99.99
  include_original: true
  candidates: [static_int8, FP16, quantize_mode_dynamic_int8]
  exclude: ["*head*"]
prune: {method: unstructured, ratio: 0.5}
benchmark:
  batch_sizes: [1, 8, 32]
  max_seconds: 45.5
  device: cuda
evaluation:
  min_top1_agreement: 0.98
  min_cosine_similarity: 0.995
"""


def test_quantize_and_benchmark_fields_load_by_short_names(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(QUANTIZE_YAML)
    spec = load_spec(path)
    q = spec.quantize
    assert q.mode == spec_pb2.QUANTIZE_MODE_AUTO
    assert q.calibration == spec_pb2.CALIBRATION_METHOD_PERCENTILE
    assert (q.calibration_samples, q.percentile, q.include_original) == (128, 99.99, True)
    assert list(q.candidates) == [
        spec_pb2.QUANTIZE_MODE_STATIC_INT8,
        spec_pb2.QUANTIZE_MODE_FP16,
        spec_pb2.QUANTIZE_MODE_DYNAMIC_INT8,
    ]
    assert list(q.exclude) == ["*head*"]
    assert list(spec.benchmark.batch_sizes) == [1, 8, 32]
    assert spec.benchmark.max_seconds == 45.5
    assert spec.benchmark.device == spec_pb2.DEVICE_CUDA
    assert (spec.evaluation.min_top1_agreement, spec.evaluation.min_cosine_similarity) == (0.98, 0.995)
    again = spec_from_dict(spec_to_dict(spec))
    assert again == spec


def test_quantize_field_problems_are_all_reported() -> None:
    with pytest.raises(SpecError) as err:
        spec_from_dict(
            {
                "quantize": {"mode": "int4", "calibration_samples": "64", "candidate": ["fp16"]},
                "benchmark": {"batch_sizes": [1, "8"], "device": "tpu"},
            }
        )
    problems = dict(err.value.violations)
    assert "int4" in problems["quantize.mode"]
    assert "static_int8" in problems["quantize.mode"]
    assert "integer" in problems["quantize.calibration_samples"]
    assert "candidates" in problems["quantize.candidate"]
    assert "integer" in problems["benchmark.batch_sizes[1]"]
    assert "cpu, cuda" in problems["benchmark.device"]


def test_checked_spec_counts_the_shards_the_cli_will_upload(tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text("prune:\n  method: channel\n  ratio: 0.5\nfinetune:\n  epochs: 1\n")
    with pytest.raises(SpecError) as caught:
        load_checked_spec(path, model_pb2.MODEL_FORMAT_ONNX)
    assert caught.value.problems == [("finetune", "needs data.train: the shards to fine-tune on")]
    spec = load_checked_spec(path, model_pb2.MODEL_FORMAT_ONNX, train=["a.npz"])
    assert not spec.HasField("data"), "the shards join the spec once uploaded, not before"


def test_checked_spec_leaves_out_rules_on_fields_that_could_not_be_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("prune:\n  method: chanel\n  ratio: '0.5'\n")
    with pytest.raises(SpecError) as caught:
        load_checked_spec(path, model_pb2.MODEL_FORMAT_ONNX)
    assert [field for field, _ in caught.value.problems] == ["prune.method", "prune.ratio"]


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", '{"prune": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"),
        (".json", '{"prune": ' + "[" * 5000 + "]" * 5000 + "}"),
        (".yaml", "prune: " + "[" * 5000 + "]" * 5000 + "\n"),
        (".yaml", "prune:\n" + "".join(" " * i + "a:\n" for i in range(1, 400)) + " " * 400 + "b: 1\n"),
    ],
)
def test_a_spec_nested_thousands_deep_is_a_spec_error(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    with pytest.raises(SpecError, match="nested more than 32 levels deep"):
        load_spec(path)


def test_yaml_aliases_are_walked_once(tmp_path: Path) -> None:
    lines = ["a0: &a0 [1, 2]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 25)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join([*lines, "prune: {method: unstructured, ratio: 0.5}"]) + "\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert [field for field, _ in caught.value.problems] == [f"a{i}" for i in range(25)]
