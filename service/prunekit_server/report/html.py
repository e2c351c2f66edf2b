"""``report.html``: one self-contained page (inline CSS, plots as base64 PNG, no script, no external asset).

Layout: a headline per variant (speed-up, compression, fidelity, accuracy,
flags), "Accuracy could not be measured" when so, the warnings, the plots
(:mod:`.plots`), then the tables the terminal and Markdown renderings show
(accuracy rows among the variants', the data, the fine-tuning runs), and the
protocol. Each plot sits in a ``<figure class="plot" id="plot-KEY"
data-plot=KEY>`` (a browser check frames each by its id to find it on a
screenshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from prunekit.text.dynamic_tables import (
    dynamic_exit_rows,
    dynamic_model_rows,
    dynamic_summary,
    dynamic_sweep_rows,
)
from prunekit.text.provenance import provenance_lines
from prunekit.text.report_tables import (
    flag_names,
    grouped_warnings,
    latency_rows,
    layer_rows,
    protocol_parts,
    variant_rows,
)
from prunekit.text.search_tables import search_rows, search_summary
from prunekit.text.training_tables import accuracy_not_measured, data_lines, finetune_rows, finetune_summary
from prunekit.v1 import report_pb2

from .dynamic_plot import dynamic_plots
from .plots import Plot, plots
from .search_plot import pareto_plot
from .tradeoff_plot import tradeoff_plot

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;background:#fff;color:#222}
main{max-width:1240px;margin:0 auto;padding:20px 24px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ccc;border-radius:6px;padding:10px 14px;min-width:200px}
.card h3{margin:0 0 6px;font-size:15px}.card .big{font-size:20px;font-weight:600}
.flag{display:inline-block;font-size:11px;border-radius:3px;padding:1px 5px;margin:2px 2px 0 0;
background:#e8e8e8}
.flag.bad{background:#f6d5d8;color:#8a0010}.flag.good{background:#d7eed9;color:#14532d}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:6px 10px;margin:6px 0;font-size:13px}
.notice{background:#fdecee;border-left:4px solid #b00020;padding:8px 12px;margin:12px 0;font-size:14px}
.plots{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
figure.plot{margin:0;padding:6px;border:1px solid #e3e3e3;border-radius:4px;background:#fff}
figure.plot.wide{grid-column:1 / -1}
figure.plot img{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#444;margin-top:4px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
.scroll{overflow-x:auto}
ul.protocol{font-size:13px}
ul.provenance{font-size:12px;color:#444;margin:0 0 14px;padding-left:18px;word-break:break-all}
details{margin-top:4px}
"""
_BAD = {
    "SLOWER_THAN_BASELINE",
    "BELOW_QUALITY_RULE",
    "BELOW_ACCURACY_RULE",
    "LATENCY_UNSTABLE",
    "NOT_SELECTED",
}
_GOOD = {"MEETS_QUALITY_RULE", "MEETS_ACCURACY_RULE", "SELECTED"}


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _flags(names: Sequence[str]) -> str:
    spans = []
    for name in names:
        kind = " bad" if name in _BAD else " good" if name in _GOOD else ""
        spans.append(f'<span class="flag{kind}">{escape(name.lower().replace("_", " "))}</span>')
    return "".join(spans)


def _accuracy(variant: report_pb2.ModelVariant, baseline: report_pb2.ModelStats) -> str:
    """``accuracy 97.2% (-0.6 pt)`` or ``MSE 0.0123``; "" when not measured."""
    if not variant.stats.HasField("accuracy"):
        return ""
    a = variant.stats.accuracy
    if a.HasField("mse"):
        return f"MSE {a.mse:.4g}"
    text = f"accuracy {a.top1 * 100:.1f}%"
    if baseline.HasField("accuracy") and not baseline.accuracy.HasField("mse"):
        text += f" ({(a.top1 - baseline.accuracy.top1) * 100:+.1f} pt)"
    return text


def _card(variant: report_pb2.ModelVariant, baseline: report_pb2.ModelStats) -> str:
    q = variant.stats.quality
    fidelity = (
        f"top-1 agreement {q.top1_agreement * 100:.1f}%, cosine {q.cosine_similarity:.4f}"
        if variant.stats.HasField("quality")
        else ""
    )
    accuracy = _accuracy(variant, baseline)
    speed = f"{variant.latency_speedup:.2f}x" if variant.latency_speedup else "-"
    return (
        f'<div class="card"><h3>{escape(variant.name)}</h3>'
        f'<div class="big">{escape(speed)} speed</div>'
        f"<div>{variant.compression_ratio:.2f}x smaller compressed, "
        f"{variant.macs_reduction:.2f}x fewer MACs</div>"
        f"<div>{escape(fidelity)}</div>"
        + (f'<div class="big">{escape(accuracy)}</div>' if accuracy else "")
        + f"{_flags(flag_names(variant.flags))}</div>"
    )


def _warning(code: str, texts: Sequence[str]) -> str:
    """One block per code: its first message, the others folded away (a ``<details>``, no script)."""
    if len(texts) == 1:
        return f'<div class="warn"><b>{escape(code)}</b>: {escape(texts[0])}</div>'
    rest = "".join(f"<li>{escape(t)}</li>" for t in texts[1:])
    return (
        f'<div class="warn"><b>{escape(code)}</b> ({len(texts)}): {escape(texts[0])}'
        f"<details><summary>{len(texts) - 1} more</summary><ul>{rest}</ul></details></div>"
    )


def _provenance(report: report_pb2.OptimizationReport) -> str:
    lines = provenance_lines(report)
    if not lines:
        return ""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<section id="provenance"><ul class="provenance">{items}</ul></section>'


def _figure(plot: Plot) -> str:
    return (
        f'<figure class="plot{" wide" if plot.wide else ""}" id="plot-{escape(plot.key)}" '
        f'data-plot="{escape(plot.key)}">'
        f'<img alt="{escape(plot.title)}" src="data:image/png;base64,{plot.png_base64}">'
        f"<figcaption><b>{escape(plot.title)}.</b> {escape(plot.caption)}</figcaption></figure>"
    )


def _items(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _training_sections(report: report_pb2.OptimizationReport) -> list[str]:
    """The data summary and the fine-tuning runs, when the job had them."""
    parts = []
    if report.HasField("data"):
        parts += ["<h2>Data</h2>", _items(data_lines(report))]
    if report.HasField("finetune"):
        headers, rows = finetune_rows(report)
        parts += ["<h2>Fine-tuning</h2>", _items(finetune_summary(report)), _table(headers, rows)]
    return parts


def _dynamic_section(report: report_pb2.OptimizationReport) -> list[str]:
    """The per-input measurement of a DYNAMIC job, when it ran."""
    if not report.HasField("dynamic"):
        return []
    parts = ["<h2>Dynamic: latency per input</h2>", _items(dynamic_summary(report))]
    for rows in (dynamic_model_rows(report), dynamic_exit_rows(report), dynamic_sweep_rows(report)):
        parts.append(_table(*rows))
    return parts


def render_html(report: report_pb2.OptimizationReport, *, title: str = "prunekit report") -> str:
    """The whole page as a string."""
    variants = list(report.variants)
    names = ", ".join(v.name for v in variants) or "no variants"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{len(variants)} variant(s) against the baseline: {escape(names)}.</p>',
        _provenance(report),
        '<div class="cards">' + "".join(_card(v, report.baseline) for v in variants) + "</div>",
    ]
    not_measured = accuracy_not_measured(report)
    if not_measured is not None:
        parts.append(f'<p class="notice">{escape(not_measured[:1].upper() + not_measured[1:])}</p>')
    if report.warnings:
        parts += ["<h2>Warnings</h2>", *(_warning(code, texts) for code, texts in grouped_warnings(report))]
    figures = dynamic_plots(report) + plots(report)
    for extra in (tradeoff_plot(report), pareto_plot(report)):
        if extra is not None:
            figures.insert(0, extra)
    if figures:
        parts.append('<h2>Plots</h2><div class="plots">' + "".join(_figure(p) for p in figures) + "</div>")
    headers, rows = variant_rows(report)
    parts += ["<h2>Variants against the baseline</h2>", _table(headers, rows)]
    lat_headers, lat_rows = latency_rows(report)
    if lat_rows:
        parts += ["<h2>Latency by runtime and batch size</h2>", _table(lat_headers, lat_rows)]
    if report.HasField("search"):
        headers, rows = search_rows(report)
        parts += ["<h2>Latency-target search</h2>", _items(search_summary(report)), _table(headers, rows)]
    parts += _dynamic_section(report) + _training_sections(report)
    if report.layers:
        layer_headers, layers, _ = layer_rows(report, len(report.layers))
        parts += ["<h2>Layers</h2>", _table(layer_headers, layers)]
    if report.HasField("protocol"):
        conditions, notes = protocol_parts(report.protocol)
        items = "".join(f"<li>{escape(item)}</li>" for item in [", ".join(conditions), *notes])
        parts += ["<h2>Protocol</h2>", f'<ul class="protocol">{items}</ul>']
    parts.append("</main></body></html>")
    return "\n".join(parts)
