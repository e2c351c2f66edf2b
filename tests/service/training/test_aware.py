"""Quantization-aware training: fake quantization that matches ONNX Runtime INT8, training to float ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from scripts.digits import INPUTS, digits_split, export_onnx, train_digits_cnn

from prunekit.spec.quantize_configs import AwareTrainingConfig, StaticInt8Config
from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.quantization import QuantizeContext, quantize
from prunekit_server.training.aware import aware_training, fake_quantized_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow digits CNN (4-8-8 channels), briefly trained: INT8 costs it accuracy."""
    model = train_digits_cnn(epochs=0, steps=200, c1=4, c2=8, c3=8)
    return export_onnx(model, tmp_path_factory.mktemp("narrow") / "narrow.onnx")


def _images(count: int, offset: int = 0) -> np.ndarray:
    train, _ = digits_split()
    return np.asarray(train.inputs[0], dtype=np.float32)[offset : offset + count]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": x})[0])


def test_fake_quantization_is_closer_to_onnx_runtime_int8_than_the_float_model(
    narrow: Path, tmp_path: Path
) -> None:
    calibration = [{"image": _images(1, i)} for i in range(64)]
    context = QuantizeContext(tmp_path, calibration, "")
    int8 = quantize(narrow, tmp_path / "int8.onnx", StaticInt8Config(), context).path
    x = _images(64, 200)
    module = onnx_to_fx(onnx.load(str(narrow)), inputs=list(INPUTS))
    with torch.no_grad():
        floating = module(torch.from_numpy(x)).numpy()
        fake_quantized_layers(module, calibration, ["image"])
        simulated = module(torch.from_numpy(x)).numpy()
    reference = _run(int8, x)
    assert np.abs(simulated - reference).mean() < 0.8 * np.abs(floating - reference).mean()


def test_aware_training_returns_a_float_model_with_trained_weights_and_the_same_interface(
    narrow: Path,
) -> None:
    train, held_out = digits_split()
    calibration = [{"image": _images(1, i)} for i in range(16)]
    original = onnx.load(str(narrow))
    trained = aware_training(
        original, INPUTS, train, held_out, AwareTrainingConfig(steps=20, lr=1e-3), calibration
    )
    onnx.checker.check_model(trained)
    assert [i.name for i in trained.graph.input] == [i.name for i in original.graph.input]
    assert not {n.op_type for n in trained.graph.node} & {
        "QuantizeLinear",
        "DequantizeLinear",
        "FakeQuantize",
    }
    x = _images(32, 300)
    before = _run(narrow, x)
    session = ort.InferenceSession(trained.SerializeToString(), providers=["CPUExecutionProvider"])
    after = np.asarray(session.run(None, {"image": x})[0])
    assert after.shape == before.shape
    assert not np.allclose(after, before)
    assert (after.argmax(1) == before.argmax(1)).mean() > 0.8  # distilled: it stays near its teacher
