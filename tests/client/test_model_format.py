"""The model format from the file's content (TorchScript zip, ONNX ModelProto), else its suffix."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pytest

from prunekit._cli_args import model_arg
from prunekit._model_format import infer_format, sniff_format
from prunekit.v1 import model_pb2
from tests.samples import write_sample_model

ONNX = model_pb2.MODEL_FORMAT_ONNX
TORCHSCRIPT = model_pb2.MODEL_FORMAT_TORCHSCRIPT


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    write_sample_model(root / "net.onnx", "onnx", "mlp", width=8)
    write_sample_model(root / "net.pt", "torchscript", "mlp", width=8)
    return {"onnx": root / "net.onnx", "torchscript": root / "net.pt"}


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        ("torchscript", "silero_vad.jit", TORCHSCRIPT),
        ("torchscript", "model.bin", TORCHSCRIPT),
        ("torchscript", "mislabelled.onnx", TORCHSCRIPT),
        ("onnx", "model", ONNX),
        ("onnx", "mislabelled.pt", ONNX),
    ],
)
def test_the_content_decides(
    exported: dict[str, Path], tmp_path: Path, source: str, name: str, expected: int
) -> None:
    path = tmp_path / name
    path.write_bytes(exported[source].read_bytes())
    assert sniff_format(path) == expected
    assert infer_format(path) == expected
    assert model_arg(str(path)) == path


def test_ambiguous_content_falls_back_to_the_suffix(tmp_path: Path) -> None:
    plain_zip = tmp_path / "weights.pt"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("weights/tensor.bin", b"\0" * 16)
    no_graph = tmp_path / "header.onnx"
    no_graph.write_bytes(b"\x08\x07" * 50)  # ir_version only: could be the start of anything
    empty = tmp_path / "empty.jit"
    empty.write_bytes(b"")
    for path, expected in ((plain_zip, TORCHSCRIPT), (no_graph, ONNX), (empty, TORCHSCRIPT)):
        assert sniff_format(path) is None
        assert infer_format(path) == expected


def test_a_truncated_onnx_file_is_not_onnx(exported: dict[str, Path], tmp_path: Path) -> None:
    data = exported["onnx"].read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    assert sniff_format(cut) is None
    with pytest.raises(ValueError, match="from its content or its suffix"):
        infer_format(cut)
    with pytest.raises(argparse.ArgumentTypeError, match="cannot tell the model format"):
        model_arg(str(cut))
