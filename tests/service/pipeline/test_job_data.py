"""The job's data in the pipeline: splits, the data report, feeds; bad shards rejected naming the array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scripts.digits import INPUTS, digits_arrays, write_shards

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.hashing import sha256_file
from prunekit_server.pipeline import JobData, StagedShard
from prunekit_server.pipeline.job_data import data_feeds, describe_feeds, load_job_data
from tests.service.training.finetune_cases import CHANNEL, digits_data, digits_model, run, spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INPUTS_AT_8 = [model_pb2.InputSpec(name="image", shape=[8, 1, 8, 8], dtype=model_pb2.DATA_TYPE_FLOAT32)]


def _staged(paths: list[Path]) -> list[StagedShard]:
    return [StagedShard(p, uri=f"s3://bucket/{p.parent.name}/{p.name}", sha256=sha256_file(p)) for p in paths]


def test_train_is_split_when_there_are_no_eval_shards(tmp_path: Path) -> None:
    data = JobData(train=_staged(write_shards(tmp_path / "train", shards=3)))
    loaded = load_job_data(data, INPUTS, 0.0, seed=0)
    assert loaded.train is not None
    assert loaded.eval is not None
    assert (len(loaded.train), len(loaded.eval)) == (1438, 359)
    report = loaded.report
    assert (report.train_samples, report.eval_samples, report.eval_fraction) == (1438, 359, 0.2)
    assert [s.samples for s in report.train] == [599, 599, 599]
    assert report.train[0].uri == "s3://bucket/train/digits-0.npz"
    assert report.train[0].sha256 == data.train[0].sha256
    assert (report.supervision, report.num_classes) == ("label", 10)
    assert not loaded.empty
    again = load_job_data(data, INPUTS, 0.0, seed=0)
    assert again.eval is not None
    assert np.array_equal(again.eval.inputs[0], loaded.eval.inputs[0])
    other = load_job_data(data, INPUTS, 0.5, seed=1)
    assert other.report.eval_samples == 898


def test_eval_shards_are_used_as_given(tmp_path: Path) -> None:
    x, y = digits_arrays()
    train = write_shards(tmp_path / "train", x[:1000], y[:1000], shards=1)
    held_out = write_shards(tmp_path / "eval", x[1000:], y[1000:], shards=1, labels=True)
    loaded = load_job_data(JobData(train=_staged(train), eval=_staged(held_out)), INPUTS, 0.3, seed=0)
    assert loaded.report.eval_fraction == 0.0
    assert (loaded.report.train_samples, loaded.report.eval_samples) == (1000, 797)
    unlabelled = write_shards(tmp_path / "plain", x[:1000], shards=1, labels=False)
    mixed = load_job_data(JobData(train=_staged(unlabelled), eval=_staged(held_out)), INPUTS, 0.0, seed=0)
    assert mixed.report.supervision == "none"
    assert mixed.eval is not None
    assert mixed.eval.label is not None
    targets = tmp_path / "targets.npz"
    np.savez(targets, image=x[1000:], target=np.eye(10, dtype=np.float32)[y[1000:]])
    with pytest.raises(ServiceError) as caught:
        load_job_data(JobData(train=_staged(train), eval=_staged([targets])), INPUTS, 0.0, seed=0)
    assert caught.value.reason == "INVALID_DATASET"
    assert "supervision" in caught.value.message


def test_no_data_is_empty() -> None:
    loaded = load_job_data(JobData(), INPUTS, 0.0, seed=0)
    assert loaded.empty
    assert (loaded.train, loaded.eval) == (None, None)
    assert loaded.report.train_samples == 0


def test_feeds_come_in_batches_of_the_model_batch_size(tmp_path: Path) -> None:
    loaded = load_job_data(JobData(train=_staged(write_shards(tmp_path, shards=1))), INPUTS_AT_8, 0.0, 0)
    assert loaded.train is not None
    feeds = data_feeds(loaded.train, INPUTS_AT_8, 4)
    assert len(feeds) == 4
    assert all(f["image"].shape == (8, 1, 8, 8) for f in feeds)
    assert np.array_equal(feeds[1]["image"], loaded.train.inputs[0][8:16])
    assert describe_feeds(feeds, "train") == "4 feed(s) of 8 sample(s) from the train split"
    tiny = loaded.train.subset(np.arange(3))
    (wrapped,) = data_feeds(tiny, INPUTS_AT_8, 5)
    assert np.array_equal(wrapped["image"][3], tiny.inputs[0][0])
    assert data_feeds(tiny, INPUTS_AT_8, 0) == []


def _bad_cases() -> list[tuple[str, dict[str, np.ndarray], str]]:
    x, y = digits_arrays()
    x, y = x[:64], y[:64]
    return [
        ("missing input", {"pixels": x, "label": y}, "s3://bucket/data/custom.npz:image"),
        ("wrong shape", {"image": x[:, :, :4, :4].copy(), "label": y}, "s3://bucket/data/custom.npz:image"),
        ("wrong dtype", {"image": x.astype(np.float64), "label": y}, "s3://bucket/data/custom.npz:image"),
        ("float label", {"image": x, "label": y.astype(np.float32)}, "s3://bucket/data/custom.npz:label"),
    ]


@pytest.mark.parametrize(("case", "arrays", "field"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_datasets_fail_the_job_naming_the_array(
    tmp_path: Path, case: str, arrays: dict[str, np.ndarray], field: str
) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data", arrays=arrays)
    with pytest.raises(ServiceError) as caught:
        run(model, spec(CHANNEL, spec_pb2.FinetuneSpec(steps=5)), tmp_path / "job", data)
    error = caught.value
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "INVALID_DATASET")
    assert field in [v.field for v in error.violations], error.violations
    assert field in error.message
    assert not (tmp_path / "job" / "artifacts" / "pruned.onnx").exists()
