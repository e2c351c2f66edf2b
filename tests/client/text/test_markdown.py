"""Report tables shared by the terminal and Markdown renderings: variants, flags, latencies, protocol."""

from __future__ import annotations

from prunekit._render import render_report
from prunekit.text.markdown import markdown_table, render_markdown
from prunekit.text.report_tables import flag_names, layer_rows, quantization_text, stability_text
from prunekit.v1 import model_pb2, report_pb2, spec_pb2

from ..conftest import sample_report


def multi_report() -> report_pb2.OptimizationReport:
    """The sample report plus a slower, unselected fp16 variant, two batch sizes and a stability protocol."""
    report = sample_report()
    for stats, p50 in ((report.baseline, 12.5), (report.variants[0].stats, 12.25)):
        stats.latency.windows = 4
        stats.latency.stable = True
        stats.latency.peak_memory_bytes = 3 << 20
        stats.latencies.add().CopyFrom(stats.latency)
        stats.latencies.add(
            p50_ms=p50 * 3, batch_size=8, runtime="onnxruntime 1.20.1", windows=5, stable=False
        )
    slow = report.variants.add(
        name="pruned_fp16",
        source="pruned",
        format=model_pb2.MODEL_FORMAT_ONNX,
        latency_speedup=0.5,
        flags=[
            report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE,
            report_pb2.VARIANT_FLAG_MEETS_QUALITY_RULE,
            report_pb2.VARIANT_FLAG_NOT_SELECTED,
        ],
        quantization=report_pb2.QuantizationInfo(mode=spec_pb2.QUANTIZE_MODE_FP16, format="float16"),
    )
    slow.stats.latency.CopyFrom(report_pb2.LatencyStats(p50_ms=25.0, p90_ms=26.0, p99_ms=30.0, windows=12))
    slow.stats.quality.CopyFrom(report_pb2.QualityStats(top1_agreement=1.0, cosine_similarity=0.9999))
    slow.files.add(
        artifact="pruned_fp16.onnx", format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=2048, sha256="ef" * 32
    )
    report.protocol.batch_sizes.extend([1, 8])
    report.protocol.stability_rule = "windows of 50 timed runs per model"
    report.protocol.stable = False
    report.protocol.quality_rule.CopyFrom(
        report_pb2.QualityRule(min_top1_agreement=0.99, min_cosine_similarity=0.98)
    )
    report.protocol.selection_rule = "AUTO keeps the fastest"
    report.protocol.memory_method = "VmHWM growth"
    return report


def test_flags_quantization_and_stability_cells() -> None:
    report = multi_report()
    slow = report.variants[1]
    assert flag_names(slow.flags) == ["SLOWER_THAN_BASELINE", "MEETS_QUALITY_RULE", "NOT_SELECTED"]
    assert quantization_text(slow) == "fp16 (float16)"
    assert quantization_text(report.variants[0]) == "-"
    assert stability_text(report.baseline.latency) == "stable (4)"
    assert stability_text(slow.stats.latency) == "unstable (12)"
    assert stability_text(report_pb2.LatencyStats()) == "-"


def test_terminal_report_shows_every_variant_flag_and_measurement() -> None:
    text = render_report(multi_report())
    lines = text.splitlines()
    header = lines[0].split()
    assert header == ["baseline", "pruned", "pruned_fp16"]
    flags = next(line for line in lines if line.startswith("flags"))
    assert "SLOWER_THAN_BASELINE" in flags
    assert "NOT_SELECTED" in flags
    speedup = next(line for line in lines if line.startswith("speed-up"))
    assert speedup.split()[1:] == ["-", "1.02x", "0.50x"]
    assert next(line for line in lines if line.startswith("peak memory")).split()[2:4] == ["3.0", "MiB"]
    assert "latency windows" in text
    by_batch = [line for line in lines if line.startswith(("baseline ", "pruned "))]
    assert any(" 8 " in line and "37.500" in line for line in by_batch)
    protocol = lines[-1]
    assert protocol.startswith(
        "Protocol: onnxruntime 1.20.1, CPUExecutionProvider, cpu, 1 thread, batch 1, 8"
    )
    assert "stability NOT reached for every measurement: windows of 50 timed runs per model" in protocol
    assert "quality rule: top-1 agreement >= 0.99, cosine similarity >= 0.98" in protocol
    assert "peak memory: VmHWM growth" in protocol


def test_markdown_report() -> None:
    text = render_markdown(multi_report())
    assert text.startswith("# prunekit report\n")
    assert "Variants: `pruned`, `pruned_fp16`." in text
    assert "|  | baseline | pruned | pruned_fp16 |" in text
    assert "| --- | ---: | ---: | ---: |" in text
    assert "| flags | - | - | SLOWER_THAN_BASELINE MEETS_QUALITY_RULE NOT_SELECTED |" in text
    assert "| pruned_fp16 | pruned_fp16.onnx | ONNX | 2.0 KiB | efefefefefefefef |" in text
    assert "| baseline | onnxruntime 1.20.1 | 8 | 37.500 |" in text
    assert "- **UNSTRUCTURED_NO_SPEEDUP**: zeros do not speed up" in text
    assert "- AUTO keeps the fastest" in text
    assert text.index("## Layers") < text.index("## Warnings") < text.index("## Protocol")
    assert "## Sensitivity" not in text


def test_markdown_sensitivity_schedule_and_escaping() -> None:
    report = sample_report()
    report.sensitivity.add(layer="conv|1", metric="top1_agreement", ratios=[0.1, 0.5], values=[0.99, 0.9])
    report.schedule.add(step=1, ratio=0.25, macs=1000, metric="top1_agreement", value=0.98)
    text = render_markdown(report)
    assert "| conv\\|1 | top1_agreement | 0.1: 0.9900, 0.5: 0.9000 |" in text
    assert "| 1 | 0.250 | 1,000 | top1_agreement | 0.9800 |" in text
    assert markdown_table(["a", "b"], [["1", "x|y"]], "rl") == "| a | b |\n| ---: | --- |\n| 1 | x\\|y |"


def test_a_factorized_layer_shows_its_rank_where_others_show_sparsity() -> None:
    report = report_pb2.OptimizationReport(
        layers=[
            report_pb2.LayerChange(
                name="fc1",
                op_type="Gemm",
                shape_before=[64, 32],
                shape_after=[8, 32],
                rank=8,
                macs_before=2048,
                macs_after=768,
            ),
            report_pb2.LayerChange(name="fc2", op_type="Gemm", shape_before=[10, 64], sparsity=0.5),
        ]
    )
    headers, rows, hidden = layer_rows(report, 10)
    column = headers.index("sparsity")
    assert [row[column] for row in rows] == ["rank 8", "50.0%"]
    assert rows[0][headers.index("MACs")] == "2.05 K -> 768"
    assert hidden == 0
