"""The data rules of a spec: shard URIs, the eval fraction, the accuracy rule's need for labels."""

from __future__ import annotations

import math

import pytest

from prunekit.spec.limits import SpecLimits
from prunekit.v1 import spec_pb2

from .rules import DATA, PRUNE
from .rules import violations as _violations


def test_data_rules() -> None:
    data = spec_pb2.DataSpec(
        train=["", "train.npz", "s3://b/x.npz", "s3://b/x.npz", "s3://b/\x00.npz"],
        eval=["s3://b/x.npz", "s3://b/y.npz"],
        eval_fraction=1.0,
    )
    found = _violations(spec_pb2.OptimizationSpec(prune=PRUNE, data=data), SpecLimits(max_data_shards=6))
    assert found == {
        "spec.data.train[0]": ["a URI of 1 to 2048 printable characters"],
        "spec.data.train[1]": ["'train.npz' is not a URI: use the uri UploadDataset returned"],
        "spec.data.train[3]": ["'s3://b/x.npz' is listed twice"],
        "spec.data.train[4]": ["a URI of 1 to 2048 printable characters"],
        "spec.data": ["at most 6 train and eval entries in all"],
        "spec.data.eval_fraction": ["must be 0 (default 0.2) or 0 < value < 1"],
    }
    empty = spec_pb2.OptimizationSpec(prune=PRUNE)
    empty.data.SetInParent()
    assert _violations(empty) == {"spec.data": ["name train or eval shards, or leave data out"]}


@pytest.mark.parametrize("drop", [-0.1, 1.5, math.nan])
def test_max_accuracy_drop_range(drop: float) -> None:
    spec = spec_pb2.OptimizationSpec(
        prune=PRUNE, data=DATA, evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=drop)
    )
    assert _violations(spec) == {
        "spec.evaluation.max_accuracy_drop": ["must be 0 (no rule) or 0 < value <= 1 (a fraction)"]
    }


def test_max_accuracy_drop_needs_data() -> None:
    spec = spec_pb2.OptimizationSpec(prune=PRUNE, evaluation=spec_pb2.EvaluationSpec(max_accuracy_drop=0.02))
    assert _violations(spec) == {
        "spec.evaluation.max_accuracy_drop": ["needs data: labelled eval (or train) shards"]
    }
