"""The dynamic section's text: summary, per-model latency, exits or tokens, the sweep with its choice."""

from __future__ import annotations

from prunekit._render import render_report
from prunekit.text.dynamic_tables import (
    dynamic_exit_rows,
    dynamic_model_rows,
    dynamic_summary,
    dynamic_sweep_rows,
)
from prunekit.text.markdown import render_markdown
from prunekit.v1 import report_pb2, spec_pb2

R = report_pb2


def _models() -> list[report_pb2.DynamicModelStats]:
    return [
        R.DynamicModelStats(name="original", mean_ms=0.04, p50_ms=0.035, p90_ms=0.05, p99_ms=0.06, samples=10,
                            accuracy=0.99, top1_agreement=1.0),
        R.DynamicModelStats(name="dynamic", mean_ms=0.01, p50_ms=0.009, p90_ms=0.02, p99_ms=0.03, samples=10,
                            accuracy=0.98, top1_agreement=0.99),
    ]  # fmt: skip


def test_an_early_exit_section_lists_exits_and_marks_the_chosen_threshold() -> None:
    report = R.OptimizationReport(
        dynamic=R.DynamicReport(
            form=spec_pb2.DYNAMIC_FORM_EARLY_EXIT,
            inputs="eval split, 10 samples",
            models=_models(),
            exits=[
                R.DynamicExit(name="exit1", after="/pool", macs_fraction=0.1, share=0.8, head_agreement=0.97),
                R.DynamicExit(name="final", macs_fraction=1.0, share=0.2),
            ],
            threshold=0.9,
            metric="accuracy",
            sweep=[
                R.DynamicSweepPoint(threshold=0.8, metric=0.97),
                R.DynamicSweepPoint(threshold=0.9, metric=0.98, mean_ms=0.011),
            ],
            mean_speedup=4.0,
        )
    )  # fmt: skip
    assert "4.00x lower" in dynamic_summary(report)[0]
    assert "threshold 0.9" in dynamic_summary(report)[0]
    _, models = dynamic_model_rows(report)
    assert models[1][:3] == ["dynamic", "10", "0.01"]
    assert models[1][6:] == ["98.00%", "99.00%"]
    _, exits = dynamic_exit_rows(report)
    assert exits == [
        ["exit1", "/pool", "10.00%", "80.00%", "97.00%"],
        ["final", "-", "100.00%", "20.00%", "-"],
    ]
    headers, sweep = dynamic_sweep_rows(report)
    assert headers[:2] == ["threshold", "accuracy"]
    assert [row[-1] for row in sweep] == ["", "chosen"]
    assert sweep[0][3] == "-"
    assert "## Dynamic: latency per input" in render_markdown(report)
    terminal = render_report(report)
    assert "Dynamic, per input:" in terminal
    assert "exit1" in terminal


def test_a_token_skip_section_lists_tokens_per_layer() -> None:
    report = R.OptimizationReport(
        dynamic=R.DynamicReport(
            form=spec_pb2.DYNAMIC_FORM_TOKEN_SKIP,
            models=_models(),
            tokens=[R.DynamicLayerTokens(layer=0, tokens=65), R.DynamicLayerTokens(layer=1, tokens=20)],
            keep_tokens=20,
            distill_steps=300,
            metric="top1_agreement",
            sweep=[R.DynamicSweepPoint(threshold=20 / 65, keep_tokens=20, metric=0.98)],
            inputs="eval split, measurement half: 5 samples (odd positions)",
            calibration_inputs="eval split, calibration half: 5 samples (even positions)",
        )
    )
    summary = dynamic_summary(report)
    assert "20 tokens kept; tokens per layer: layer 0: 65, layer 1: 20" in summary[0]
    assert "trained 300 distillation steps" in summary[0]
    assert "Calibrated on: eval split, calibration half: 5 samples (even positions)." in summary
    assert dynamic_exit_rows(report) == (["layer", "tokens per input"], [["0", "65"], ["1", "20"]])
    headers, sweep = dynamic_sweep_rows(report)
    assert headers[0] == "kept tokens"
    assert sweep == [["20", "98.00%", "0.00%", "-", "chosen"]]
