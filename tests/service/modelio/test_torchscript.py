"""TorchScript intake: archive pre-scan, loading, ONNX export and writing weights back."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from prunekit.v1 import model_pb2
from prunekit_server.errors import Code, ServiceError
from prunekit_server.model_caps import ModelCaps
from prunekit_server.modelio import (
    load_torchscript,
    prescan_torchscript_archive,
    torchscript_to_onnx,
    write_torchscript_with_weights,
)
from tests.samples import write_sample_model

MLP_INPUT = [model_pb2.InputSpec(name="features", shape=[2, 64])]
CNN_INPUT = [model_pb2.InputSpec(name="image", shape=[1, 3, 16, 16])]


def _expect(code: Code, reason: str, match: str | None = None) -> pytest.RaisesExc[ServiceError]:
    return pytest.raises(ServiceError, match=match, check=lambda e: (e.code, e.reason) == (code, reason))


def _invalid(match: str | None = None) -> pytest.RaisesExc[ServiceError]:
    return _expect(Code.INVALID_ARGUMENT, "INVALID_MODEL", match)


def _zip(path: Path, entries: dict[str, bytes], *, compress: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


@pytest.fixture
def mlp_pt(tmp_path: Path) -> Path:
    write_sample_model(tmp_path / "mlp.pt", "torchscript", "mlp")
    return tmp_path / "mlp.pt"


@pytest.fixture
def cnn_pt(tmp_path: Path) -> Path:
    write_sample_model(tmp_path / "cnn.pt", "torchscript", "cnn", width=8, image_size=16)
    return tmp_path / "cnn.pt"


def test_prescan_accepts_a_real_archive(mlp_pt: Path) -> None:
    prescan_torchscript_archive(mlp_pt)


def test_non_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02not a zip at all" * 10)
    with _invalid("not a readable zip"):
        load_torchscript(path)


@pytest.mark.parametrize(
    "name", ["../evil.py", "archive/../../evil", "/etc/passwd", "C:/windows/x", "a\\..\\b"]
)
def test_unsafe_entry_names(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / "model.pt", {"archive/data.pkl": b"x", name: b"y"})
    with _invalid():
        prescan_torchscript_archive(path)


def test_too_many_entries(tmp_path: Path) -> None:
    path = _zip(tmp_path / "model.pt", {f"archive/{i}": b"" for i in range(5)})
    with _invalid():
        prescan_torchscript_archive(path, max_entries=4)
    prescan_torchscript_archive(path, max_entries=5)


def test_zip_bomb(tmp_path: Path) -> None:
    path = _zip(tmp_path / "model.pt", {"archive/data.pkl": b"\0" * (4 << 20)}, compress=True)
    assert path.stat().st_size < 64 << 10
    with _expect(Code.RESOURCE_EXHAUSTED, "MODEL_TOO_LARGE", "unpack") as info:
        prescan_torchscript_archive(path, caps=ModelCaps(memory_bytes=4 << 20))
    assert info.value.metadata["max_tensor_bytes"] == str(1 << 20)


def test_duplicate_entries(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"a")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("archive/data.pkl", b"b")
    with _invalid("duplicate"):
        prescan_torchscript_archive(path)


def test_overlapping_entries(tmp_path: Path) -> None:
    data = _zip(tmp_path / "one.zip", {"archive/aaaa": b"payload"}).read_bytes()
    eocd = data.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12 : eocd + 20])
    central = data[cd_offset : cd_offset + cd_size]
    twin = central.replace(b"archive/aaaa", b"archive/bbbb")
    tail = bytearray(data[eocd:])
    struct.pack_into("<HHI", tail, 8, 2, 2, 2 * cd_size)
    path = tmp_path / "model.pt"
    path.write_bytes(data[:cd_offset] + central + twin + bytes(tail))
    assert len(zipfile.ZipFile(path).infolist()) == 2
    with _invalid("overlap"):
        prescan_torchscript_archive(path)


def test_zip_that_is_not_torchscript(tmp_path: Path) -> None:
    path = _zip(tmp_path / "model.pt", {"archive/readme.txt": b"hello"})
    with _invalid("model.pt is not a TorchScript model"):
        load_torchscript(path)


def test_plain_torch_save_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with _invalid():
        load_torchscript(path)


def test_load_puts_module_in_eval_mode(cnn_pt: Path) -> None:
    module = load_torchscript(cnn_pt)
    assert isinstance(module, torch.jit.ScriptModule)
    assert not module.training


def test_export_matches_torch_and_keeps_state_dict_names(cnn_pt: Path, tmp_path: Path) -> None:
    module = load_torchscript(cnn_pt)
    model = torchscript_to_onnx(module, CNN_INPUT, tmp_path / "out.onnx")
    names = {t.name for t in model.graph.initializer}
    expected = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
    assert names == expected
    assert not any(n.op_type == "Identity" and n.input[0] in names for n in model.graph.node)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected_out = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run_onnx(model, {"image": x}), expected_out, rtol=1e-4, atol=1e-5)
    assert onnx.load(str(tmp_path / "out.onnx")) == model


class _Svd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u: torch.Tensor = torch.linalg.svd(x)[0]
        return u


def test_export_failure_is_unsupported(tmp_path: Path) -> None:
    module = torch.jit.trace(_Svd(), torch.randn(2, 4, 4))  # type: ignore[no-untyped-call]
    spec = [model_pb2.InputSpec(name="x", shape=[2, 4, 4])]
    with _expect(Code.FAILED_PRECONDITION, "UNSUPPORTED_MODEL") as info:
        torchscript_to_onnx(module, spec, tmp_path / "out.onnx")
    assert "linalg_svd" in info.value.message
    assert "\n" not in info.value.message


def test_wrong_declared_shape_is_invalid_spec(mlp_pt: Path, tmp_path: Path) -> None:
    spec = [model_pb2.InputSpec(name="x", shape=[2, 63])]
    with _expect(Code.INVALID_ARGUMENT, "INVALID_SPEC") as info:
        torchscript_to_onnx(load_torchscript(mlp_pt), spec, tmp_path / "out.onnx")
    assert info.value.violations[0].field == "spec.inputs"


def _onnx_and_ts_outputs(
    onnx_model: onnx.ModelProto, ts_path: Path, x: np.ndarray, input_name: str
) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        ts_out = torch.jit.load(str(ts_path))(torch.from_numpy(x)).numpy()  # type: ignore[no-untyped-call]
    return _run_onnx(onnx_model, {input_name: x}), ts_out


def _replace(model: onnx.ModelProto, new: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.name in new:
            tensor.CopyFrom(numpy_helper.from_array(new[tensor.name], tensor.name))
    return out


def test_write_weights_matches_modified_onnx(cnn_pt: Path, tmp_path: Path) -> None:
    model = torchscript_to_onnx(load_torchscript(cnn_pt), CNN_INPUT, tmp_path / "cnn.onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = weights["layer1.conv1.weight"].copy()
    conv[::2] = 0.0
    new = {
        "layer1.conv1.weight": conv,
        "stem.1.weight": np.linspace(0.5, 1.5, 8, dtype=np.float32),
        "layer2.bn1.running_mean": np.full(16, 0.25, np.float32),
        "fc.bias": weights["fc.bias"] + 1.0,
    }
    warnings = write_torchscript_with_weights(cnn_pt, new, tmp_path / "out.pt")
    assert warnings == []
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    onnx_out, ts_out = _onnx_and_ts_outputs(_replace(model, new), tmp_path / "out.pt", x, "image")
    np.testing.assert_allclose(ts_out, onnx_out, rtol=1e-4, atol=1e-5)
    original_out, _ = _onnx_and_ts_outputs(model, cnn_pt, x, "image")
    assert not np.allclose(original_out, onnx_out)


def test_write_weights_with_smaller_shapes(mlp_pt: Path, tmp_path: Path) -> None:
    model = torchscript_to_onnx(load_torchscript(mlp_pt), MLP_INPUT, tmp_path / "mlp.onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = np.arange(0, 256, 2)
    new = {
        "net.0.weight": weights["net.0.weight"][keep],
        "net.0.bias": weights["net.0.bias"][keep],
        "net.2.weight": weights["net.2.weight"][:, keep],
    }
    assert write_torchscript_with_weights(mlp_pt, new, tmp_path / "small.pt") == []
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    onnx_out, ts_out = _onnx_and_ts_outputs(_replace(model, new), tmp_path / "small.pt", x, "features")
    np.testing.assert_allclose(ts_out, onnx_out, rtol=1e-4, atol=1e-5)


class _Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(x))


def test_fallback_by_value_for_folded_names(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "seq.pt"
    torch.jit.save(torch.jit.trace(_Seq().eval(), torch.randn(1, 3, 8)), str(path))  # type: ignore[no-untyped-call]
    folded = tmp_path / "folded.onnx"
    torch.onnx.export(
        torch.jit.load(str(path)),  # type: ignore[no-untyped-call]
        (torch.randn(1, 3, 8),),
        str(folded),
        input_names=["x"],
        opset_version=17,
        dynamo=False,
        do_constant_folding=True,
    )
    model = onnx.load(str(folded))
    transposed = [t for t in model.graph.initializer if t.name.startswith("onnx::MatMul")]
    assert len(transposed) == 1, [t.name for t in model.graph.initializer]
    name = transposed[0].name
    new_value = numpy_helper.to_array(transposed[0]) * 0.5
    new_value[:, 0] = 0.0
    new: dict[str, np.ndarray] = {name: new_value, "does.not.exist": np.zeros(3, np.float32)}
    warnings = write_torchscript_with_weights(path, new, tmp_path / "out.pt", original_onnx=model)
    assert len(warnings) == 1
    assert warnings[0].startswith("UNMAPPED_WEIGHT: does.not.exist")
    x = np.random.default_rng(3).standard_normal((1, 3, 8)).astype(np.float32)
    onnx_out, ts_out = _onnx_and_ts_outputs(_replace(model, {name: new_value}), tmp_path / "out.pt", x, "x")
    np.testing.assert_allclose(ts_out, onnx_out, rtol=1e-5, atol=1e-6)
    bias = torch.jit.load(str(path)).proj.bias[0].item()  # type: ignore[no-untyped-call]
    assert np.all(ts_out[..., 0] == max(0.0, bias))


def test_nothing_mapped_is_unsupported(mlp_pt: Path, tmp_path: Path) -> None:
    with _expect(Code.FAILED_PRECONDITION, "UNSUPPORTED_MODEL"):
        write_torchscript_with_weights(mlp_pt, {"onnx::Gemm_7": np.zeros(3, np.float32)}, tmp_path / "o.pt")
    assert not (tmp_path / "o.pt").exists()
