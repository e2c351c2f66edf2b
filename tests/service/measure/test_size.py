"""Serialized and gzip-compressed model sizes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from prunekit_server.measure.size import compressed_size, serialized_size
from tests.samples import write_sample_model


def test_serialized_size_is_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    write_sample_model(path, "onnx", "mlp")
    model = onnx.load(str(path))
    assert serialized_size(model) == len(model.SerializeToString()) == path.stat().st_size


def test_compressed_size_matches_gzip_level_6_for_bytes_and_paths(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 4, size=(1 << 20) + 12345, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = len(gzip.compress(data, compresslevel=6, mtime=0))
    assert compressed_size(data) == expected
    assert compressed_size(path) == expected
    assert compressed_size(b"") == len(gzip.compress(b"", compresslevel=6, mtime=0))


def test_zeroed_weights_compress_better(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    write_sample_model(path, "onnx", "mlp")
    model = onnx.load(str(path))
    sparse = onnx.ModelProto()
    sparse.CopyFrom(model)
    for tensor in sparse.graph.initializer:
        value = numpy_helper.to_array(tensor).copy()
        value[np.abs(value) < np.median(np.abs(value))] = 0
        tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    assert serialized_size(sparse) == serialized_size(model)
    assert compressed_size(sparse.SerializeToString()) < 0.8 * compressed_size(model.SerializeToString())
