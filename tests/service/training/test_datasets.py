"""Shards in, a validated Dataset out; malformed shards rejected with INVALID_DATASET naming the array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunekit.v1 import model_pb2
from prunekit_server.errors import Code, ServiceError
from prunekit_server.training.datasets import Dataset, load_shards

from .digits import INPUTS, digits_arrays, write_shards

TWO_INPUTS = (
    model_pb2.InputSpec(name="a", shape=[1, 3], dtype=model_pb2.DATA_TYPE_FLOAT32),
    model_pb2.InputSpec(name="b", shape=[1, 2], dtype=model_pb2.DATA_TYPE_INT64),
)


def _shard(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def _good(n: int = 4) -> dict[str, np.ndarray]:
    return {
        "a": np.zeros((n, 3), np.float32),
        "b": np.ones((n, 2), np.int64),
        "label": np.arange(n, dtype=np.int64),
    }


def _rejected(paths: list[Path], inputs: Any = TWO_INPUTS, **kwargs: Any) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        load_shards(paths, inputs, **kwargs)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.reason == "INVALID_DATASET"
    return info.value


def test_digit_shards_load_in_model_input_order(tmp_path: Path) -> None:
    images, labels = digits_arrays()
    dataset = load_shards(write_shards(tmp_path, shards=3), INPUTS)
    assert len(dataset) == len(labels) == 1797
    assert dataset.input_names == ("image",)
    np.testing.assert_array_equal(dataset.inputs[0], images)
    assert dataset.label is not None
    assert dataset.label.dtype == np.int64
    np.testing.assert_array_equal(dataset.label, labels)
    assert dataset.num_classes == 10
    assert dataset.nbytes == images.nbytes + labels.nbytes


def test_single_input_may_be_called_input(tmp_path: Path) -> None:
    images, labels = digits_arrays()
    path = _shard(tmp_path / "s.npz", input=images[:10], label=labels[:10])
    dataset = load_shards([path], INPUTS)
    assert dataset.input_names == ("image",)
    np.testing.assert_array_equal(dataset.inputs[0], images[:10])


def test_two_input_shards_with_targets(tmp_path: Path) -> None:
    good = _good(5)
    del good["label"]
    good["target"] = np.ones((5, 7), np.float32)
    dataset = load_shards(
        [_shard(tmp_path / "x.npz", **good), _shard(tmp_path / "y.npz", **good)], TWO_INPUTS
    )
    assert len(dataset) == 10
    assert dataset.target is not None
    assert dataset.target.shape == (10, 7)
    assert dataset.label is None
    assert dataset.num_classes is None


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d.pop("b"), "bad.npz:b", "missing"),
        (lambda d: d.update(a=np.zeros((4, 5), np.float32)), "bad.npz:a", "shape"),
        (lambda d: d.update(a=np.zeros((4, 3), np.float64)), "bad.npz:a", "dtype"),
        (lambda d: d.update(a=np.full((4, 3), np.nan, np.float32)), "bad.npz:a", "NaN"),
        (lambda d: d.update(a=np.full((4, 3), np.inf, np.float32)), "bad.npz:a", "infinite"),
        (lambda d: d.update(label=np.arange(3, dtype=np.int64)), "bad.npz:label", "count"),
        (lambda d: d.update(label=np.zeros(4, np.float32)), "bad.npz:label", "integer"),
        (lambda d: d.update(label=np.zeros((4, 1), np.int64)), "bad.npz:label", "1-D"),
        (lambda d: d.update(lable=np.zeros(4, np.int64)), "bad.npz:lable", "unknown"),
        (lambda d: d.update(b=np.array([{"x": 1}] * 4, dtype=object)), "bad.npz:b", "pickle"),
    ],
)
def test_bad_shards_are_rejected_naming_the_array(
    tmp_path: Path, change: Any, field: str, words: str
) -> None:
    arrays = _good()
    change(arrays)
    error = _rejected([_shard(tmp_path / "ok.npz", **_good()), _shard(tmp_path / "bad.npz", **arrays)])
    assert any(v.field == field and words in v.description for v in error.violations), error.violations
    assert all(v.field.startswith("bad.npz") for v in error.violations)
    assert field in error.message


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    arrays = _good()
    arrays["a"] = np.full((4, 9), np.nan, np.float16)
    del arrays["b"]
    error = _rejected([_shard(tmp_path / "bad.npz", **arrays)])
    described = " | ".join(f"{v.field} {v.description}" for v in error.violations)
    for words in (
        "bad.npz:b missing",
        "bad.npz:a dtype",
        "bad.npz:a per-sample shape",
        "bad.npz:a contains NaN",
    ):
        assert words in described


def test_not_an_npz_and_inconsistent_shards(tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    npy = tmp_path / "plain.npz"
    with npy.open("wb") as f:
        np.save(f, np.zeros(3))
    no_label = _good()
    del no_label["label"]
    error = _rejected(
        [junk, npy, _shard(tmp_path / "one.npz", **_good()), _shard(tmp_path / "two.npz", **no_label)]
    )
    fields = {v.field for v in error.violations}
    assert {"junk.npz", "plain.npz", "two.npz"} <= fields


def test_memory_cap_is_checked_on_headers_before_decompressing(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, a=np.zeros((2_000_000, 3), np.float32), b=np.zeros((2_000_000, 2), np.int64))
    assert bomb.stat().st_size < 200_000
    error = _rejected([bomb], max_bytes=1_000_000)
    assert [v.field for v in error.violations] == ["bomb.npz"]
    assert "memory cap" in error.message
    small = _good(10)  # 10 * (12 + 16 + 8) = 360 bytes per shard
    paths = [_shard(tmp_path / f"s{i}.npz", **small) for i in range(3)]
    assert len(load_shards(paths, TWO_INPUTS, max_bytes=1080)) == 30
    error = _rejected(paths, max_bytes=1079)
    assert [v.field for v in error.violations] == ["s2.npz"]


def test_split_and_batches_are_seeded() -> None:
    x = np.arange(20, dtype=np.float32)[:, None]
    dataset = Dataset(["x"], [x], np.arange(20, dtype=np.int64))
    train, held_out = dataset.split(0.25, seed=3)
    assert held_out is not None
    assert (len(train), len(held_out)) == (15, 5)
    assert sorted([*train.inputs[0][:, 0], *held_out.inputs[0][:, 0]]) == list(range(20))
    assert dataset.split(0.0)[1] is None
    two = dataset.subset(np.arange(2))
    assert [len(part) for part in two.split(0.9) if part is not None] == [1, 1]  # train keeps one sample
    assert dataset.subset(np.arange(1)).split(0.9)[1] is None
    with pytest.raises(ValueError, match="eval_fraction"):
        dataset.split(1.0)

    def order(seed: int, epoch: int, start: int = 0) -> list[int]:
        batches = train.batches(4, shuffle=True, seed=seed, epoch=epoch, drop_last=True, start=start)
        return [int(v) for b in batches for v in b.inputs[0][:, 0]]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert len(order(1, 0)) == 12  # 3 full batches, the short one dropped
    assert order(1, 0, start=2) == order(1, 0)[8:]
    assert [len(b) for b in train.batches(4)] == [4, 4, 4, 3]
    labels = [int(v) for b in train.batches(4) for v in (b.label if b.label is not None else [])]
    assert labels == [int(v) for v in train.inputs[0][:, 0]]
