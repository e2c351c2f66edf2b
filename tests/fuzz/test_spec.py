"""Fuzzing the spec path: a mapping gives a spec or a ``SpecError``; a spec gives violations, never a crash.

Keys are drawn from the proto's own field names (and a few wrong ones) so the examples reach deep into the
messages; a spec that parses is then run through every rule and every translation to technique configs.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from google.protobuf.descriptor import Descriptor
from hypothesis import given
from hypothesis import strategies as st

from prunekit import SpecError, spec_from_dict
from prunekit.spec.check import spec_violations
from prunekit.spec.translate import finetune_plan, prune_config, quantize_plan
from prunekit.spec.violation import SpecRuleError
from prunekit.v1 import model_pb2, spec_pb2

from .strategies import FUZZ


def _names(descriptor: Descriptor, seen: set[str]) -> set[str]:
    if descriptor.full_name in seen:
        return set()
    seen.add(descriptor.full_name)
    names = {f.name for f in descriptor.fields}
    for f in descriptor.fields:
        if f.message_type is not None:
            names |= _names(f.message_type, seen)
    return names


KEYS = sorted(_names(spec_pb2.OptimizationSpec.DESCRIPTOR, set()) | {"bogus", "", "ratoi"})
ENUM_WORDS = ["unstructured", "channel", "neuron", "layer", "attention_head", "n_m", "static_int8", "auto"]
ENUM_WORDS += ["l1", "taylor", "iterative", "global", "per_layer", "float32", "int64", "cuda", "sgd", "nope"]

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ENUM_WORDS),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=40,
)


def _run_rules(spec: spec_pb2.OptimizationSpec) -> None:
    for model_format in (model_pb2.MODEL_FORMAT_ONNX, model_pb2.MODEL_FORMAT_TORCHSCRIPT):
        found = spec_violations(spec, model_format)
        assert all(v.field and v.description for v in found)
        if found:
            continue
        for translate, part in (
            (prune_config, spec.prune),
            (quantize_plan, spec.quantize),
            (finetune_plan, spec.finetune),
        ):
            with contextlib.suppress(SpecRuleError):
                translate(part)  # type: ignore[operator]


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), _VALUES, max_size=6))
def test_any_mapping(data: dict[str, Any]) -> None:
    try:
        spec = spec_from_dict(data)
    except SpecError as exc:
        problems = exc.problems
    else:
        _run_rules(spec)
        return
    assert problems


_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 0.5, -1.0]))


@FUZZ
@given(
    st.sampled_from([*spec_pb2.PruneMethod.values(), 99]),
    _NUMBERS,
    _NUMBERS,
    st.integers(-5, 2000),
    st.lists(st.tuples(st.text(max_size=4), _NUMBERS, st.booleans()), max_size=3),
    st.sampled_from(list(spec_pb2.QuantizeMode.values())),
    st.integers(-1, 3),
)
def test_structured_specs(
    method: int,
    ratio: float,
    macs: float,
    number: int,
    overrides: list[tuple[str, float, bool]],
    mode: int,
    steps: int,
) -> None:
    prune = spec_pb2.PruneSpec(
        method=method,  # type: ignore[arg-type]
        ratio=ratio,
        target_macs_reduction=macs,
        round_to=max(number, 0),
        n=max(number % 7, 0),
        m=max(number % 70, 0),
        steps=max(steps, 0),
        schedule=spec_pb2.PRUNE_SCHEDULE_ITERATIVE if steps else spec_pb2.PRUNE_SCHEDULE_ONE_SHOT,
        overrides=[spec_pb2.LayerOverride(pattern=p, ratio=r, ignore=i) for p, r, i in overrides],
    )
    finetune = spec_pb2.FinetuneSpec(
        steps=max(number, 0), learning_rate=abs(ratio) if math.isfinite(ratio) else 0
    )
    spec = spec_pb2.OptimizationSpec(
        prune=prune,
        quantize=spec_pb2.QuantizeSpec(mode=mode),  # type: ignore[arg-type]
        finetune=finetune,
        data=spec_pb2.DataSpec(train=["file:///x/"]),
    )
    _run_rules(spec)
