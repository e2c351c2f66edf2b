"""Every quantization mode writes a model ONNX Runtime runs; configs round-trip; the registries work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from prunekit.v1 import model_pb2
from prunekit_server.measure.quality import compare_models, synthetic_inputs
from prunekit_server.quantization import (
    DynamicInt8Config,
    Fp16Config,
    QuantizeConfig,
    QuantizeContext,
    StaticInt8Config,
    quantize,
    registered_modes,
)
from prunekit_server.quantization import preprocess as pre
from tests.samples import write_sample_model

SHAPE = [1, 3, 16, 16]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("q") / "cnn.onnx"
    write_sample_model(path, "onnx", "cnn", width=8, image_size=16)
    return path


def _inputs() -> list[model_pb2.InputSpec]:
    return [model_pb2.InputSpec(name="input", shape=SHAPE, dtype=model_pb2.DATA_TYPE_FLOAT32)]


def _context(root: Path, samples: int = 8) -> QuantizeContext:
    return QuantizeContext(root / "scratch", synthetic_inputs(_inputs(), samples, 1), f"{samples} synthetic")


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize(
    ("config", "expected_ops"),
    [
        (StaticInt8Config(calibration_samples=8), {"QuantizeLinear", "DequantizeLinear", "Conv"}),
        (
            StaticInt8Config(calibration="entropy", calibration_samples=8),
            {"QuantizeLinear", "DequantizeLinear"},
        ),
        (
            StaticInt8Config(calibration="percentile", percentile=99.9, calibration_samples=8),
            {"QuantizeLinear", "DequantizeLinear"},
        ),
        (DynamicInt8Config(), {"DynamicQuantizeLinear", "ConvInteger"}),
        (Fp16Config(), {"Cast", "Conv"}),
    ],
    ids=["static-minmax", "static-entropy", "static-percentile", "dynamic", "fp16"],
)
def test_every_mode_yields_a_model_ort_runs(
    config: QuantizeConfig, expected_ops: set[str], cnn: Path, tmp_path: Path
) -> None:
    result = quantize(cnn, tmp_path / "q.onnx", config, _context(tmp_path))
    assert result.path == tmp_path / "q.onnx"
    assert expected_ops <= _ops(result.path)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"
    (out,) = session.run(None, {"input": np.ones((2, 3, 16, 16), np.float32)})  # the batch stays dynamic
    assert out.shape == (2, 10)
    assert np.isfinite(out).all()
    quality = compare_models(cnn, result.path, synthetic_inputs(_inputs(), 6, 7))
    assert quality.samples == 6
    assert 0.0 <= quality.top1_agreement <= 1.0
    assert quality.cosine_similarity > 0.9
    assert 0.0 < quality.max_abs_error < 1.0
    details = result.details
    assert details.mode == config.mode
    assert details.tool.startswith("onnxruntime")
    if isinstance(config, StaticInt8Config):
        assert (details.format, details.activation_type, details.weight_type) == ("QDQ", "uint8", "int8")
        assert details.per_channel
        assert (details.calibration, details.calibration_samples) == (config.calibration, 8)
        assert details.calibration_inputs == "8 synthetic"
        assert details.percentile == (99.9 if config.calibration == "percentile" else 0.0)


def test_static_quantization_uses_per_channel_int8_weights(cnn: Path, tmp_path: Path) -> None:
    result = quantize(
        cnn, tmp_path / "q.onnx", StaticInt8Config(calibration_samples=4), _context(tmp_path, 4)
    )
    model = onnx.load(str(result.path))
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8, "weights are stored as int8"
    scales = {t.name: list(t.dims) for t in model.graph.initializer if t.name.endswith("_scale")}
    assert any(dims and dims[0] > 1 for dims in scales.values()), "one scale per output channel"


def test_fp16_keeps_float32_io_and_stores_float16(cnn: Path, tmp_path: Path) -> None:
    result = quantize(cnn, tmp_path / "h.onnx", Fp16Config(), _context(tmp_path))
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def test_excluded_nodes_stay_float(cnn: Path, tmp_path: Path) -> None:
    names = [n.name for n in onnx.load(str(cnn)).graph.node if n.op_type == "Gemm"]
    config = DynamicInt8Config(exclude=("*fc*",))
    result = quantize(cnn, tmp_path / "d.onnx", config, _context(tmp_path))
    assert result.details.excluded_nodes == tuple(names)
    nodes = onnx.load(str(result.path)).graph.node
    assert any(n.op_type == "ConvInteger" for n in nodes)  # the rest is quantized
    fc = [n.op_type for n in nodes if n.name.startswith(names[0])]
    assert fc
    assert "MatMulInteger" not in fc


def test_static_needs_calibration(cnn: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration feeds"):
        quantize(cnn, tmp_path / "q.onnx", StaticInt8Config(), QuantizeContext(tmp_path / "s"))


def test_preprocessing_failure_is_a_warning(
    cnn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization.shape_inference as si

    calls: list[bool] = []

    def broken(source: str, output: str, *, skip_symbolic_shape: bool = False) -> None:
        calls.append(skip_symbolic_shape)
        raise RuntimeError("symbolic shape inference exploded")

    monkeypatch.setattr(si, "quant_pre_process", broken)
    result = quantize(
        cnn, tmp_path / "q.onnx", StaticInt8Config(calibration_samples=4), _context(tmp_path, 4)
    )
    assert calls == [False, True]
    (warning,) = result.warnings
    assert warning.startswith("QUANT_PREPROCESS_SKIPPED:")
    assert "exploded" in warning
    assert "QuantizeLinear" in _ops(result.path)


def test_preprocessing_runs_once_per_model(cnn: Path, tmp_path: Path) -> None:
    context = _context(tmp_path)
    first, _ = pre.preprocessed(cnn, context)
    mtime = first.stat().st_mtime_ns
    second, _ = pre.preprocessed(cnn, context)
    assert first == second != cnn
    assert second.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "config",
    [
        StaticInt8Config(calibration="entropy", calibration_samples=12, exclude=("a*",)),
        DynamicInt8Config(per_channel=True),
        Fp16Config(keep_io_types=False, exclude=("x", "y")),
    ],
)
def test_configs_round_trip_through_json(config: QuantizeConfig) -> None:
    data = config.to_dict()
    assert data["mode"] == config.mode
    assert QuantizeConfig.from_dict(data) == config
    assert type(config).from_dict({k: v for k, v in data.items() if k != "mode"}) == config
    assert set(config.describe()) == set(data) - {"mode"}
    assert all(config.describe().values())


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="calibration_samples"):
        StaticInt8Config(calibration_samples=0)
    with pytest.raises(ValueError, match="calibration must be"):
        StaticInt8Config(calibration="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percentile"):
        StaticInt8Config(percentile=50.0)
    with pytest.raises(ValueError, match="not one string"):
        Fp16Config(exclude="fc*")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown quantization mode"):
        QuantizeConfig.from_dict({"mode": "int4"})
    with pytest.raises(ValueError, match="unknown static_int8 option"):
        QuantizeConfig.from_dict({"mode": "static_int8", "bits": 4})


def test_registries_know_every_mode() -> None:
    assert set(registered_modes()) == {"static_int8", "dynamic_int8", "fp16"}
    assert [c.suffix for c in (StaticInt8Config(), DynamicInt8Config(), Fp16Config())] == [
        "int8",
        "int8_dynamic",
        "fp16",
    ]
