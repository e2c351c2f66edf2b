"""report.md and report.html from a real job's report; the page checked in headless chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prunekit.text.markdown import render_markdown
from prunekit.v1 import model_pb2, report_pb2, spec_pb2
from prunekit_server.pipeline import OptimizationResult, run_optimization
from prunekit_server.report.html import render_html
from tests.samples import write_sample_model

ALWAYS = ["tradeoff", "variants", "speedup", "latency", "stability", "layers"]
ANALYSED = [
    "tradeoff",
    "variants",
    "accuracy",
    "speedup",
    "latency",
    "stability",
    "layers",
    "finetune",
    "sensitivity",
    "schedule",
]


SHA = "5e" * 32


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> OptimizationResult:
    root = tmp_path_factory.mktemp("render")
    write_sample_model(root / "cnn.onnx", "onnx", "cnn", width=8, image_size=16)
    spec = spec_pb2.OptimizationSpec(
        prune=spec_pb2.PruneSpec(method=spec_pb2.PRUNE_METHOD_UNSTRUCTURED, ratio=0.5),
        quantize=spec_pb2.QuantizeSpec(
            mode=spec_pb2.QUANTIZE_MODE_AUTO,
            candidates=[spec_pb2.QUANTIZE_MODE_STATIC_INT8, spec_pb2.QUANTIZE_MODE_FP16],
            calibration_samples=4,
        ),
        benchmark=spec_pb2.BenchmarkSpec(batch_sizes=[1, 2], warmup=1, iterations=3, max_seconds=0.3),
        evaluation=spec_pb2.EvaluationSpec(samples=4),
    )
    given = report_pb2.Provenance(job_id="job-render", model_filename="cnn.onnx", model_sha256=SHA, attempt=1)
    return run_optimization(
        root / "cnn.onnx",
        model_pb2.MODEL_FORMAT_ONNX,
        spec,
        root / "work",
        lambda *_: None,
        provenance=given,
    )


@pytest.fixture(scope="module")
def report(run: OptimizationResult) -> report_pb2.OptimizationReport:
    return run.report


@pytest.fixture(scope="module")
def page(report: report_pb2.OptimizationReport) -> str:
    """The page of the report with sensitivity curves and a schedule added."""
    return render_html(_analysed(report))


def _analysed(report: report_pb2.OptimizationReport) -> report_pb2.OptimizationReport:
    """The report with what labelled data, fine-tuning, a sensitivity analysis and a schedule would add."""
    out = report_pb2.OptimizationReport()
    out.CopyFrom(report)
    out.baseline.accuracy.CopyFrom(report_pb2.AccuracyStats(top1=0.95, top5=0.99, samples=360))
    for i, variant in enumerate(out.variants):
        variant.stats.accuracy.CopyFrom(
            report_pb2.AccuracyStats(top1=0.94 - 0.03 * i, top5=0.98, samples=360)
        )
        variant.flags.append(
            report_pb2.VARIANT_FLAG_MEETS_ACCURACY_RULE
            if i == 0
            else report_pb2.VARIANT_FLAG_BELOW_ACCURACY_RULE
        )
    out.protocol.quality_rule.max_accuracy_drop = 0.02
    del out.warnings[:]
    out.warnings.extend(w for w in report.warnings if w.code != "ACCURACY_NOT_MEASURED")
    out.data.CopyFrom(
        report_pb2.DataReport(
            train=[report_pb2.DatasetShard(uri="prunekit://datasets/t", sha256="ab" * 32, samples=1437)],
            train_samples=1077,
            eval_samples=360,
            eval_fraction=0.25,
            supervision="label",
            num_classes=10,
        )
    )
    steps = list(range(10, 210, 10))
    out.finetune.CopyFrom(
        report_pb2.FinetuneReport(
            before=report_pb2.AccuracyStats(top1=0.61, top5=0.9, samples=360),
            attempts=2,
            runs=[
                report_pb2.FinetuneRun(
                    phase="finetune",
                    steps=200,
                    total_steps=200,
                    epochs=6,
                    stop_reason="budget",
                    loss="cross_entropy+distillation",
                    metric="accuracy",
                    final_metric=0.94,
                    best_metric=0.945,
                    best_step=180,
                    seconds=4.2,
                    steps_per_second=47.6,
                    device="cpu",
                    resumed_from_step=120,
                    loss_curve=[2.0 / (1 + 0.05 * s) for s in steps],
                    loss_curve_steps=steps,
                )
            ],
        )
    )
    for i, layer in enumerate(report.layers[:3]):
        out.sensitivity.add(
            layer=layer.name,
            metric="top1_agreement",
            ratios=[0.0, 0.25, 0.5, 0.75],
            values=[1.0, 0.99 - 0.01 * i, 0.95 - 0.05 * i, 0.8 - 0.1 * i],
        )
    for step in range(1, 5):
        out.schedule.add(
            step=step,
            ratio=0.2 * step,
            macs=1_000_000 - 150_000 * step,
            metric="top1_agreement",
            value=1.0 - 0.02 * step,
        )
    return out


def _plot_keys(page: str) -> list[str]:
    return re.findall(r'data-plot="([a-z]+)"', page)


def test_plots_follow_the_data(run: OptimizationResult, page: str) -> None:
    assert _plot_keys(run.artifacts["report.html"].read_text()) == ALWAYS
    assert _plot_keys(page) == ANALYSED
    for png in re.findall(r'src="data:image/png;base64,([^"]*)"', page):
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    assert len(re.findall(r"<figcaption><b>[^<]+</b> [^<]+</figcaption>", page)) == len(ANALYSED)


def test_provenance_is_filled_and_shown_first(run: OptimizationResult, page: str) -> None:
    p = run.report.provenance
    assert (p.job_id, p.model_filename, p.model_sha256, p.attempt) == ("job-render", "cnn.onnx", SHA, 1)
    assert p.spec.prune.ratio == 0.5
    assert p.start_time.ToNanoseconds() <= p.end_time.ToNanoseconds()
    for version in (p.prunekit_version, p.onnxruntime_version, p.torch_version, p.onnx_version):
        assert re.match(r"\d+\.\d+", version), version
    assert p.device.startswith("cpu")
    markdown = run.artifacts["report.md"].read_text()
    assert markdown.index("## Provenance") < markdown.index("## Variants against the baseline")
    assert f"- model: cnn.onnx, sha256 {SHA}" in markdown
    assert f"prunekit {p.prunekit_version}, ONNX Runtime {p.onnxruntime_version}" in markdown
    assert '"ratio": 0.5' in markdown
    assert page.index('<section id="provenance">') < page.index('<div class="cards">')
    assert "job: job-render (worker start 1)" in page
    assert f"device: {p.device}" in page


def test_warnings_are_grouped_by_code(report: report_pb2.OptimizationReport) -> None:
    noisy = report_pb2.OptimizationReport()
    noisy.CopyFrom(report)
    del noisy.warnings[:]
    for i in range(16):
        noisy.warnings.add(code="SLOWER_THAN_BASELINE", message=f"variant v{i} is slower")
    page = render_html(noisy)
    assert page.count("<b>SLOWER_THAN_BASELINE</b>") == 1
    assert "<b>SLOWER_THAN_BASELINE</b> (16): variant v0 is slower" in page
    assert "<details><summary>15 more</summary>" in page
    assert "<li>variant v15 is slower</li>" in page
    markdown = render_markdown(noisy)
    assert markdown.count("**SLOWER_THAN_BASELINE**") == 1
    assert "- **SLOWER_THAN_BASELINE** (16): variant v0 is slower; variant v1 is slower" in markdown


def test_html_is_one_self_contained_page(report: report_pb2.OptimizationReport, page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    for forbidden in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert forbidden not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(ANALYSED)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for variant in report.variants:
        assert f"<h3>{variant.name}</h3>" in page
    for code in {w.code for w in _analysed(report).warnings}:
        assert code in page
    assert "<h2>Protocol</h2>" in page
    assert "stability reached" in page or "stability NOT reached" in page


def test_html_shows_accuracy_data_and_fine_tuning(run: OptimizationResult, page: str) -> None:
    plain = run.artifacts["report.html"].read_text()
    assert '<p class="notice">Accuracy could not be measured: the job had no labelled eval data' in plain
    assert "<h2>Fine-tuning</h2>" not in plain
    assert "Accuracy could not be measured" not in page
    assert "accuracy 94.0% (-1.0 pt)" in page
    assert '<span class="flag good">meets accuracy rule</span>' in page
    assert '<span class="flag bad">below accuracy rule</span>' in page
    assert "<h2>Data</h2>" in page
    assert "supervision: label, 10 classes" in page
    assert "<h2>Fine-tuning</h2>" in page
    for cell in ("finetune", "200/200", "cross_entropy+distillation", "budget", "47.6", "step 120"):
        assert f"<td>{cell}</td>" in page
    assert "worker attempts: 2" in page
    assert "top-1 accuracy" in page


def test_markdown_file(run: OptimizationResult) -> None:
    report = run.report
    markdown = run.artifacts["report.md"].read_text()
    assert markdown == render_markdown(report)
    headings = (
        "# prunekit report",
        "## Variants against the baseline",
        "## Latency by runtime and batch size",
        "## Files",
        "## Layers",
        "## Warnings",
        "## Protocol",
    )
    for heading in headings:
        assert heading in markdown
    for variant in report.variants:
        assert f"`{variant.name}`" in markdown
        assert f"| {variant.files[0].artifact} |" in markdown
    assert "| quantization |" in markdown
    assert "| flags |" in markdown
    assert "## Sensitivity" not in markdown
    analysed = render_markdown(_analysed(report))
    assert "## Sensitivity" in analysed
    assert "## Schedule" in analysed
    assert "ACCURACY_NOT_MEASURED" in markdown
    assert "Accuracy not measured" in markdown
    for heading in ("## Data", "## Fine-tuning"):
        assert heading not in markdown
        assert heading in analysed


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("CI is set but chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (CI installs it and never skips this test)")


def _screenshot(page: Path, out: Path, profile: Path, height: int) -> np.ndarray:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        f"--user-data-dir={profile}",
        f"--screenshot={out}",
        f"--window-size=1280,{height}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert out.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


MARKERS = {
    "layers": "#ff00ff",
    "variants": "#00ffff",
    "speedup": "#ffff00",
    "latency": "#ff0080",
    "stability": "#80ff00",
    "sensitivity": "#0080ff",
    "schedule": "#ff8000",
    "accuracy": "#00ff80",
    "finetune": "#8000ff",
    "tradeoff": "#ff0000",
}
"""A saturated frame per plot (the plots' palette never uses them), drawn for the screenshot only."""


def _framed(page: str) -> str:
    """``page`` with each plot's figure framed in its :data:`MARKERS` colour."""
    frames = "".join(f"#plot-{key}{{border:6px solid {color}}}" for key, color in MARKERS.items())
    return page.replace("</head>", f"<style>{frames}</style></head>", 1)


def test_the_page_renders_every_plot_in_chromium(page: str, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    framed = _framed(page).replace(
        "</head>", "<style>#provenance{border:6px solid #0000ff}</style></head>", 1
    )
    path.write_text(framed, encoding="utf-8")
    pixels = _screenshot(path, tmp_path / "shot.png", tmp_path / "profile", 6000)
    background = np.all(pixels >= 250, axis=-1)
    assert background.mean() < 0.97, "the page is blank"
    provenance = np.all(np.abs(pixels - np.array([0, 0, 255], dtype=np.int16)) <= 3, axis=-1)
    rows = np.nonzero(provenance)[0]
    assert provenance.sum() > 1500, "the provenance is not on the screenshot"
    assert rows.min() < 200, "the provenance is not at the top of the page"
    assert rows.max() < 700, "the provenance is not at the top of the page"
    keys = _plot_keys(page)
    assert keys == ANALYSED
    for key in keys:
        color = np.array([int(MARKERS[key][i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
        frame = np.all(np.abs(pixels - color) <= 3, axis=-1)
        assert frame.sum() > 1500, f"plot {key!r}: its frame is not on the screenshot"
        rows, cols = np.nonzero(frame)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        assert bottom - top > 150, f"plot {key!r} is too short: {bottom - top} px"
        assert right - left > 300, f"plot {key!r} is too narrow: {right - left} px"
        inside = pixels[top + 12 : bottom - 12, left + 12 : right - 12]
        drawn = ~np.all(inside >= 250, axis=-1)
        assert drawn.mean() > 0.03, f"plot {key!r} is blank inside its frame"
        colors = {tuple(p) for p in inside.reshape(-1, 3)[:: max(1, inside.size // 3 // 20000)]}
        assert len(colors) > 20, f"plot {key!r} shows no image"
