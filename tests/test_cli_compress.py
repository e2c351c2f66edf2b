"""LOW_RANK, WANDA and SPARSEGPT through the ``prunekit`` CLI against a real ``prunekit-server`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from scripts.digits import INPUT_NAME, digits_arrays, export_onnx, train_digits_cnn, write_shards

from tests.samples import write_sample_model

from .service.server_process import ServerProcess, server_process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(f"file://{tmp_path_factory.mktemp('store')}") as running:
        yield running


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A briefly trained digits CNN (ONNX) and its train and eval shards."""
    root = tmp_path_factory.mktemp("digits")
    x, y = digits_arrays()
    torch.manual_seed(0)
    model = export_onnx(train_digits_cnn(epochs=0, steps=300), root / "digits.onnx")
    (train,) = write_shards(root / "train", x[:1400], y[:1400], shards=1)
    (held_out,) = write_shards(root / "eval", x[1400:], y[1400:], shards=1)
    return model, train, held_out


def optimize(server: ServerProcess, model: Path, spec: str, tmp_path: Path, *extra: str) -> dict[str, object]:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec)
    env = {**os.environ, "PRUNEKIT_SERVER": server.target}
    args = [
        "optimize",
        str(model),
        "--spec",
        str(spec_path),
        "--out",
        str(tmp_path / "out"),
        "--json",
        *extra,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "prunekit", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _variant(report: dict[str, object], name: str) -> dict[str, object]:
    variants = report["variants"]
    assert isinstance(variants, list)
    return next(v for v in variants if v["name"] == name)


def test_low_rank_torchscript_halves_macs_and_returns_a_loadable_module(
    server: ServerProcess, tmp_path: Path
) -> None:
    model = tmp_path / "cnn.pt"
    write_sample_model(model, "torchscript", "cnn", width=16)
    spec = """
inputs: [{name: input, shape: [1, 3, 32, 32], dtype: float32}]
prune: {method: low_rank, target_macs_reduction: 2.0}
benchmark: {warmup: 1, iterations: 5, max_seconds: 1}
evaluation: {samples: 8, min_top1_agreement: 0.1, min_cosine_similarity: 0.1}
"""
    report = optimize(server, model, spec, tmp_path)
    pruned = _variant(report, "pruned")
    baseline = report["baseline"]
    assert isinstance(baseline, dict)
    assert int(pruned["stats"]["macs"]) <= int(baseline["macs"]) / 2  # type: ignore[index]
    layers = report["layers"]
    assert isinstance(layers, list)
    factored = [layer for layer in layers if int(layer.get("rank", 0))]
    assert factored
    for layer in factored:
        assert int(layer["macs_after"]) < int(layer["macs_before"])
    module = torch.jit.load(str(tmp_path / "out" / "pruned.pt"))
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    onnx.checker.check_model(onnx.load(str(tmp_path / "out" / "pruned.onnx")))


def test_low_rank_composes_with_distillation_and_static_int8(
    server: ServerProcess, digits: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, train, held_out = digits
    spec = """
prune: {method: low_rank, low_rank: {energy: 0.6}}
finetune: {steps: 40, batch_size: 32, learning_rate: 0.002, distillation: {temperature: 4}}
quantize: {mode: static_int8, calibration_samples: 32}
benchmark: {warmup: 1, iterations: 5, max_seconds: 0.5}
evaluation: {min_top1_agreement: 0.1, min_cosine_similarity: 0.1}
"""
    report = optimize(server, model, spec, tmp_path, "--train", str(train), "--eval", str(held_out))
    pruned, quantized = _variant(report, "pruned"), _variant(report, "pruned_int8")
    assert "FINETUNED" in pruned["flags"]  # type: ignore[operator]
    baseline = report["baseline"]
    assert isinstance(baseline, dict)
    assert int(pruned["stats"]["macs"]) < int(baseline["macs"])  # type: ignore[index]
    accuracy = float(pruned["stats"]["accuracy"]["top1"])  # type: ignore[index]
    assert accuracy > 0.5
    assert float(quantized["stats"]["accuracy"]["top1"]) > 0.5  # type: ignore[index]
    assert np.isfinite(accuracy)
    factored = [layer for layer in report["layers"] if int(layer.get("rank", 0))]  # type: ignore[union-attr]
    assert factored
    assert all(0 < int(layer["macs_after"]) < int(layer["macs_before"]) for layer in factored)


def test_sparsegpt_calibrates_on_the_train_split_and_keeps_accuracy(
    server: ServerProcess, digits: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, train, held_out = digits
    spec = """
prune: {method: unstructured, ratio: 0.5, importance: sparsegpt, ignore: ["*conv1*"]}
benchmark: {warmup: 1, iterations: 5, max_seconds: 0.5}
evaluation: {min_top1_agreement: 0.1, min_cosine_similarity: 0.1}
"""
    report = optimize(server, model, spec, tmp_path, "--train", str(train), "--eval", str(held_out))
    codes = {w["code"] for w in report["warnings"]}  # type: ignore[union-attr]
    assert "SYNTHETIC_CALIBRATION" not in codes
    pruned, baseline = _variant(report, "pruned"), report["baseline"]
    assert isinstance(baseline, dict)
    assert int(pruned["stats"]["nonzero_parameters"]) < int(baseline["nonzero_parameters"])  # type: ignore[index]
    top1 = float(pruned["stats"]["accuracy"]["top1"])  # type: ignore[index]
    assert top1 > float(baseline["accuracy"]["top1"]) - 0.1
    zeroed = [layer for layer in report["layers"] if not layer.get("skipped")]  # type: ignore[union-attr]
    assert all(abs(float(layer["sparsity"]) - 0.5) < 0.02 for layer in zeroed)


def test_channel_sparsegpt_refits_the_layers_after_the_removed_channels_and_keeps_accuracy(
    server: ServerProcess, digits: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, train, held_out = digits
    spec = f"inputs: [{{name: {INPUT_NAME}, shape: [32, 1, 8, 8]}}]\n" + (
        """
prune: {method: channel, ratio: 0.3, importance: sparsegpt, round_to: 1}
benchmark: {warmup: 1, iterations: 5, max_seconds: 0.5}
evaluation: {min_top1_agreement: 0.1, min_cosine_similarity: 0.1}
"""
    )
    report = optimize(server, model, spec, tmp_path, "--train", str(train), "--eval", str(held_out))
    codes = {w["code"] for w in report["warnings"]}  # type: ignore[union-attr]
    assert not codes & {"SYNTHETIC_IMPORTANCE", "RECONSTRUCTION_SKIPPED", "IMPORTANCE_FALLBACK"}, codes
    layers = {layer["name"]: layer for layer in report["layers"]}  # type: ignore[union-attr]
    narrowed = [n for n, layer in layers.items() if layer["shape_after"] != layer["shape_before"]]
    assert len(narrowed) >= 2, layers
    pruned, baseline = _variant(report, "pruned"), report["baseline"]
    assert isinstance(baseline, dict)
    assert int(pruned["stats"]["macs"]) < int(baseline["macs"])  # type: ignore[index]
    top1 = float(pruned["stats"]["accuracy"]["top1"])  # type: ignore[index]
    assert top1 > float(baseline["accuracy"]["top1"]) - 0.05  # l1 without fine-tuning loses most of it


def test_wanda_n_m_without_data_warns_of_synthetic_calibration(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "cnn.onnx"
    write_sample_model(model, "onnx", "cnn", width=16)
    spec = """
prune: {method: n_m, importance: wanda}
benchmark: {warmup: 1, iterations: 5, max_seconds: 0.5}
evaluation: {samples: 8, min_top1_agreement: 0.1, min_cosine_similarity: 0.1}
"""
    report = optimize(server, model, spec, tmp_path)
    codes = {w["code"] for w in report["warnings"]}  # type: ignore[union-attr]
    assert {"SYNTHETIC_CALIBRATION", "N_M_RUNTIME_SUPPORT"} <= codes
    assert any(float(layer.get("sparsity", 0)) == 0.5 for layer in report["layers"])  # type: ignore[union-attr]


def test_aware_training_adds_a_qat_variant_beside_post_training_int8(
    server: ServerProcess, digits: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, train, held_out = digits
    spec = """
prune: {method: unstructured, ratio: 0.3}
quantize: {mode: static_int8, calibration_samples: 32, aware_training: {steps: 30, learning_rate: 0.0003}}
benchmark: {warmup: 1, iterations: 5, max_seconds: 0.5}
evaluation: {min_top1_agreement: 0.1, min_cosine_similarity: 0.1}
"""
    report = optimize(server, model, spec, tmp_path, "--train", str(train), "--eval", str(held_out))
    ptq, qat = _variant(report, "pruned_int8"), _variant(report, "pruned_int8_qat")
    for variant in (ptq, qat):
        assert float(variant["stats"]["accuracy"]["top1"]) > 0.5  # type: ignore[index]
    qat_model = onnx.load(str(tmp_path / "out" / "pruned_int8_qat.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in qat_model.graph.node}
