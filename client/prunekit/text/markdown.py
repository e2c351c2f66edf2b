"""A report as Markdown: tables for CI logs, pull requests and pipelines.

:func:`render_markdown` needs nothing but protobuf: the CLI renders a job's
report with it, and the server's worker writes ``report.md`` with it, so both
say the same. Files are named by artifact name (what ``prunekit download``
takes); storage URIs are in ``report.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

from prunekit.text.dynamic_tables import (
    dynamic_exit_rows,
    dynamic_model_rows,
    dynamic_summary,
    dynamic_sweep_rows,
)
from prunekit.text.format import enum_name, size
from prunekit.text.provenance import provenance_lines
from prunekit.text.report_tables import (
    grouped_warnings,
    latency_rows,
    layer_rows,
    protocol_parts,
    variant_rows,
)
from prunekit.text.search_tables import search_rows, search_summary
from prunekit.text.training_tables import accuracy_not_measured, data_lines, finetune_rows, finetune_summary
from prunekit.v1 import model_pb2, report_pb2

__all__ = ["markdown_table", "render_markdown"]


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table; ``align`` holds ``l`` or ``r`` per column."""
    rule = ["---:" if i < len(align) and align[i] == "r" else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _files(report: report_pb2.OptimizationReport) -> str:
    rows = []
    for v in report.variants:
        for f in v.files:
            fmt = enum_name(model_pb2.ModelFormat, f.format)
            rows.append([v.name, f.artifact, fmt, size(f.size_bytes), f.sha256[:16]])
    return markdown_table(["variant", "artifact", "format", "size", "sha256"], rows, "lllrl")


def _sensitivity(report: report_pb2.OptimizationReport) -> str:
    rows = []
    for curve in report.sensitivity:
        points = ", ".join(f"{r:g}: {v:.4f}" for r, v in zip(curve.ratios, curve.values, strict=False))
        rows.append([curve.layer, curve.metric, points])
    return markdown_table(["layer", "metric", "ratio: value"], rows)


def _schedule(report: report_pb2.OptimizationReport) -> str:
    rows = [
        [str(s.step), f"{s.ratio:.3f}", f"{s.macs:,}", s.metric, f"{s.value:.4f}"] for s in report.schedule
    ]
    return markdown_table(["step", "ratio", "MACs", "metric", "value"], rows, "rrrlr")


def render_markdown(report: report_pb2.OptimizationReport, *, title: str = "prunekit report") -> str:
    """The whole report: variants side by side (accuracy included), every latency measurement, data,
    fine-tuning, files, layers, warnings, protocol. ACCURACY_NOT_MEASURED is also said right at the top."""
    fmt = enum_name(model_pb2.ModelFormat, report.input_format)
    names = ", ".join(f"`{v.name}`" for v in report.variants) or "none"
    parts = [f"# {title}", f"Input: {fmt} model. Variants: {names}."]
    made = provenance_lines(report)
    if made:
        parts += ["## Provenance", "\n".join(f"- {_cell(line)}" for line in made)]
    not_measured = accuracy_not_measured(report)
    if not_measured is not None:
        parts.append(f"> **Accuracy not measured**: {_cell(not_measured)}")
    headers, rows = variant_rows(report)
    parts += [
        "## Variants against the baseline",
        markdown_table(headers, rows, "l" + "r" * (len(headers) - 1)),
    ]
    lat_headers, lat_rows = latency_rows(report)
    if lat_rows:
        parts += [
            "## Latency by runtime and batch size",
            markdown_table(lat_headers, lat_rows, "llr" + "r" * 8),
        ]
    if report.HasField("dynamic"):
        parts += [
            "## Dynamic: latency per input",
            "\n".join(f"- {_cell(line)}" for line in dynamic_summary(report)),
        ]
        for headers, rows in (
            dynamic_model_rows(report),
            dynamic_exit_rows(report),
            dynamic_sweep_rows(report),
        ):
            parts.append(markdown_table(headers, rows, "l" + "r" * (len(headers) - 1)))
    if report.HasField("data"):
        parts += ["## Data", "\n".join(f"- {line}" for line in data_lines(report))]
    if report.HasField("finetune"):
        ft_headers, ft_rows = finetune_rows(report)
        summary = "\n".join(f"- {line}" for line in finetune_summary(report))
        parts += ["## Fine-tuning", summary, markdown_table(ft_headers, ft_rows, "lrrlll" + "r" * 4 + "ll")]
    if any(v.files for v in report.variants):
        parts += ["## Files", _files(report)]
    if report.layers:
        layer_headers, layers, _ = layer_rows(report, len(report.layers))
        parts += ["## Layers", markdown_table(layer_headers, layers, "lllrrr")]
    if report.HasField("search"):
        headers, rows = search_rows(report)
        summary = "\n".join(f"- {line}" for line in search_summary(report))
        parts += ["## Latency-target search", summary, markdown_table(headers, rows, "ll" + "r" * 8 + "l")]
    if report.sensitivity:
        parts += ["## Sensitivity", _sensitivity(report)]
    if report.schedule:
        parts += ["## Schedule", _schedule(report)]
    if report.warnings:
        lines = [
            f"- **{code}**" + (f" ({len(texts)})" if len(texts) > 1 else "") + ": " + _cell("; ".join(texts))
            for code, texts in grouped_warnings(report)
        ]
        parts += ["## Warnings", "\n".join(lines)]
    if report.HasField("protocol"):
        conditions, notes = protocol_parts(report.protocol)
        parts += ["## Protocol", "\n".join(f"- {item}" for item in [", ".join(conditions), *notes])]
    return "\n\n".join(parts) + "\n"
