"""Writing a report's human renderings next to the artifacts: ``report.md`` and ``report.html``.

Both come from the report proto alone. The Markdown is
:func:`prunekit.text.markdown.render_markdown`, the very function the CLI uses, so
``prunekit report --format md`` and the stored file agree; the HTML page is
:func:`.html.render_html` (matplotlib, so it is rendered here in the worker,
never in the server process). Neither names storage URIs (the server fills
those into ``report.json`` after upload): files are named by artifact name.
"""

from __future__ import annotations

from pathlib import Path

from prunekit.text.markdown import render_markdown
from prunekit.v1 import report_pb2

from .html import render_html

MARKDOWN = "report.md"
HTML = "report.html"


def write_report_files(report: report_pb2.OptimizationReport, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; artifact name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / MARKDOWN
    markdown.write_text(render_markdown(report), encoding="utf-8")
    page = out_dir / HTML
    page.write_text(render_html(report), encoding="utf-8")
    return {MARKDOWN: markdown, HTML: page}
