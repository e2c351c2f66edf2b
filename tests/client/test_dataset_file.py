"""``dataset_file``: arrays become an .npz shard numpy reads back, whatever their names."""

from __future__ import annotations

import numpy as np
import pytest

from prunekit._datasets import dataset_file


def test_arrays_with_any_name_round_trip_through_numpy() -> None:
    arrays = {"file": np.arange(6, dtype=np.float32).reshape(3, 2), "allow_pickle": np.array([1, 0, 2])}
    with dataset_file(arrays) as (path, name):
        assert name == "dataset.npz"
        with np.load(path, allow_pickle=False) as loaded:
            assert sorted(loaded.files) == ["allow_pickle", "file"]
            assert np.array_equal(loaded["file"], arrays["file"])
            assert loaded["allow_pickle"].dtype == arrays["allow_pickle"].dtype
    assert not path.exists(), "the temporary shard outlived the upload"


def test_object_arrays_and_bad_names_are_refused_before_anything_is_written() -> None:
    with pytest.raises(ValueError, match="Python objects"), dataset_file({"input": [{"a": 1}]}):
        pass
    with pytest.raises(ValueError, match="non-empty strings"), dataset_file({"": np.zeros(2)}):
        pass
