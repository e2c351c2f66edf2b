"""The ``prunekit`` CLI in subprocesses against a real ``prunekit-server`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import torch
from scripts.digits import digits_arrays, export_onnx, train_digits_cnn, write_shards

from tests.samples import write_sample_model

from .service.server_process import ServerProcess, server_process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(f"file://{tmp_path_factory.mktemp('store')}") as running:
        yield running


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRUNEKIT_SERVER": server.target}
    return subprocess.run(
        [sys.executable, "-m", "prunekit", *args], env=env, capture_output=True, text=True, timeout=300
    )


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


QUICK = """
prune: {method: Unstructured, ratio: 0.5, scope: PER_LAYER, ignore: ["*fc*"]}
benchmark: {warmup: 1, iterations: 5, max_seconds: 1}
evaluation: {samples: 8}
"""


def test_optimize_onnx_prints_report_json_and_downloads(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "cnn.onnx"
    write_sample_model(model, "onnx", "cnn", width=16)
    out = tmp_path / "out"
    done = cli(
        server,
        "optimize",
        str(model),
        "--spec",
        str(write_spec(tmp_path / "s.yaml", QUICK)),
        "--out",
        str(out),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (variant,) = report["variants"]
    assert variant["name"] == "pruned"
    assert int(variant["stats"]["nonzero_parameters"]) < int(report["baseline"]["nonzero_parameters"])
    assert {w["code"] for w in report["warnings"]} >= {"UNSTRUCTURED_NO_SPEEDUP"}
    assert sorted(p.name for p in out.iterdir()) == ["pruned.onnx", "report.html", "report.json", "report.md"]
    onnx.checker.check_model(onnx.load(str(out / "pruned.onnx")))
    fc = [layer for layer in report["layers"] if "fc" in layer["name"]]
    assert fc
    assert all(layer["skipped"] for layer in fc)

    listed = cli(server, "jobs", "list", "--json")
    assert listed.returncode == 0
    job_id = json.loads(listed.stdout)[0]["id"]
    got = cli(server, "jobs", "get", job_id, "--json")
    assert json.loads(got.stdout)["state"] == "SUCCEEDED"
    cancel = cli(server, "jobs", "cancel", job_id)
    assert cancel.returncode == 1
    assert "FAILED_PRECONDITION JOB_ALREADY_FINISHED" in cancel.stderr

    shown = cli(server, "report", job_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (out / "report.md").read_text()  # the CLI renders what the worker stored
    page = cli(server, "report", job_id, "--format", "html", "--out", str(tmp_path / "pages"))
    assert page.returncode == 0, page.stderr
    assert page.stdout.strip() == str(tmp_path / "pages" / "report.html")
    assert (tmp_path / "pages" / "report.html").read_bytes() == (out / "report.html").read_bytes()


def test_optimize_torchscript_returns_a_loadable_module(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "cnn.pt"
    write_sample_model(model, "torchscript", "cnn", width=16)
    spec = write_spec(
        tmp_path / "ts.json",
        json.dumps(
            {
                "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}],
                "prune": {"method": "PRUNE_METHOD_UNSTRUCTURED", "ratio": 0.6},
                "benchmark": {"warmup": 1, "iterations": 5, "max_seconds": 1},
                "evaluation": {"samples": 4},
            }
        ),
    )
    out = tmp_path / "out"
    done = cli(server, "optimize", str(model), "--spec", str(spec), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "SUCCEEDED" in done.stdout
    assert "UNSTRUCTURED_NO_SPEEDUP" in done.stdout
    pruned = torch.jit.load(str(out / "pruned.pt"))
    weights = [p for name, p in pruned.named_parameters() if name.endswith("weight") and p.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.6, abs=0.02)
    assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_analyze_and_bad_input_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "mlp.onnx"
    write_sample_model(model, "onnx", "mlp")
    analysis = cli(server, "analyze", str(model), "--json")
    assert analysis.returncode == 0, analysis.stderr
    assert int(json.loads(analysis.stdout)["macs"]) == 64 * 256 + 256 * 256 + 256 * 10

    bad_ratio = cli(
        server,
        "optimize",
        str(model),
        "--spec",
        str(write_spec(tmp_path / "r.yaml", "prune: {method: unstructured, ratio: 1.5}")),
    )
    assert bad_ratio.returncode == 2, "refused by the CLI's own check, before any upload"
    assert "INVALID_ARGUMENT INVALID_SPEC" in bad_ratio.stderr
    assert bad_ratio.stderr.count("prune.ratio: must be a number with 0 < ratio < 1, got 1.5") == 1
    assert "uploaded" not in bad_ratio.stderr

    unknown = cli(
        server,
        "optimize",
        str(model),
        "--spec",
        str(write_spec(tmp_path / "u.yaml", "prune: {method: unstructured, ratoi: 0.5}")),
    )
    assert unknown.returncode == 2
    assert "INVALID_SPEC" in unknown.stderr
    assert "ratio" in unknown.stderr

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(4096))
    rejected = cli(server, "analyze", str(garbage))
    assert rejected.returncode == 1
    assert "INVALID_ARGUMENT INVALID_MODEL" in rejected.stderr

    missing = cli(server, "jobs", "get", "job-00000000000000000000")
    assert missing.returncode == 1
    assert "NOT_FOUND JOB_NOT_FOUND" in missing.stderr
    assert server.health() == 1


RECOVER = """
prune: {method: channel, target_macs_reduction: 2.0}
finetune: {steps: 60, batch_size: 32, learning_rate: 0.003, distillation: {temperature: 4}}
evaluation: {max_accuracy_drop: 0.05, min_top1_agreement: 0.5, min_cosine_similarity: 0.5}
benchmark: {warmup: 1, iterations: 5, max_seconds: 0.5}
"""


def test_optimize_uploads_train_and_eval_shards_and_reports_accuracy(
    server: ServerProcess, tmp_path: Path
) -> None:
    x, y = digits_arrays()
    model = export_onnx(train_digits_cnn(epochs=0, steps=200), tmp_path / "digits.onnx")
    (train,) = write_shards(tmp_path / "train", x[:1400], y[:1400], shards=1)
    (held_out,) = write_shards(tmp_path / "eval", x[1400:], y[1400:], shards=1)
    spec = write_spec(tmp_path / "recover.yaml", RECOVER)
    args = ["optimize", str(model), "--spec", str(spec), "--train", str(train), "--eval", str(held_out)]
    done = cli(server, *args, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("uploaded ") == 3, done.stderr
    report = json.loads(done.stdout)
    assert int(report["data"]["train_samples"]) == 1400
    assert int(report["data"]["eval_samples"]) == 397
    pruned = next(v for v in report["variants"] if v["name"] == "pruned")
    assert pruned["stats"]["accuracy"]["samples"] == 397
    assert "FINETUNED" in pruned["flags"]
    assert report["finetune"]["runs"][0]["steps"] == 60
