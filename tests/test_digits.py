"""The digits task of the demo, benches and tests (scripts/digits.py): it learns in seconds; its
shards and ONNX export are what a job reads."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from scripts.digits import (
    INPUT_NAME,
    INPUTS,
    OUTPUT_NAME,
    digits_arrays,
    digits_split,
    export_onnx,
    load_digit_shards,
    train_digits_cnn,
    write_shards,
)

from prunekit_server.modelio import load_onnx_checked
from prunekit_server.training.evaluate import accuracy, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_digits_are_real_images_with_ten_classes() -> None:
    images, labels = digits_arrays()
    assert images.shape == (1797, 1, 8, 8)
    assert images.dtype == np.float32
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert labels.dtype == np.int64
    assert sorted(set(labels.tolist())) == list(range(10))
    train, held_out = digits_split()
    assert (len(train), len(held_out)) == (1348, 449)


def test_the_small_cnn_trains_past_90_percent_in_seconds() -> None:
    train, held_out = digits_split()
    started = time.perf_counter()
    model = train_digits_cnn(epochs=8, seed=0, train=train)
    seconds = time.perf_counter() - started
    assert not model.training
    assert accuracy(model, held_out).top1 > 0.9
    assert seconds < 30


def test_shards_round_trip_through_load_shards(tmp_path: Path) -> None:
    images, labels = digits_arrays()
    paths = write_shards(tmp_path, images[:100], labels[:100], shards=3)
    assert [p.name for p in paths] == ["digits-0.npz", "digits-1.npz", "digits-2.npz"]
    with np.load(paths[0]) as shard:
        assert sorted(shard.files) == sorted([INPUT_NAME, "label"])
    dataset = load_digit_shards(paths)
    assert np.array_equal(dataset.inputs[0], images[:100])
    assert dataset.label is not None
    assert np.array_equal(dataset.label, labels[:100])
    unlabelled = load_digit_shards(write_shards(tmp_path / "u", images[:10], shards=1, labels=False))
    assert unlabelled.label is None
    assert len(unlabelled) == 10


def test_write_shards_rejects_labels_it_does_not_have(tmp_path: Path) -> None:
    images, _ = digits_arrays()
    with pytest.raises(ValueError, match="needs y"):
        write_shards(tmp_path, images[:10], shards=1)


@pytest.mark.parametrize("batch_size", [None, 4])
def test_the_onnx_export_matches_the_eager_model(tmp_path: Path, batch_size: int | None) -> None:
    train, held_out = digits_split()
    model = train_digits_cnn(epochs=1, seed=1, train=train)
    path = export_onnx(model, tmp_path / "digits.onnx", batch_size=batch_size)
    load_onnx_checked(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == INPUT_NAME
    assert list(given.shape[1:]) == list(INPUTS[0].shape[1:])
    assert session.get_outputs()[0].name == OUTPUT_NAME
    x = held_out.inputs[0][:4]
    (out,) = session.run(None, {INPUT_NAME: x})
    expected = predict(model, held_out)[:4].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)
