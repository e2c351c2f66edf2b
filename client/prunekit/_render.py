"""Plain-text rendering for terminals: tables of analyses, reports and jobs, and a job progress display."""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Sequence
from typing import TextIO

from google.protobuf import timestamp_pb2

from prunekit._spec import enum_short_name
from prunekit.v1 import job_pb2, model_pb2, report_pb2

__all__ = [
    "ProgressPrinter",
    "render_analysis",
    "render_job",
    "render_jobs",
    "render_report",
    "table",
]

DASH = "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Columns padded to their widest cell; ``align`` holds ``l`` or ``r`` per column (``l`` by default)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            right = i < len(align) and align[i] == "r"
            out.append(cell.rjust(widths[i]) if right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def count(n: int) -> str:
    """An exact count with thousands separators: ``11,173,962``."""
    return f"{n:,}"


def si(n: float, unit: str = "") -> str:
    """A count with a metric prefix: ``1.82 G``."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def size(n: int) -> str:
    """Bytes in binary units: ``42.6 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def shape(dims: Sequence[int]) -> str:
    """``1x3x224x224``; ``-`` for no dimensions."""
    return "x".join(str(d) for d in dims) if dims else DASH


def _enum(enum_type: object, number: int) -> str:
    return enum_short_name(enum_type.DESCRIPTOR, number).upper()  # type: ignore[attr-defined]


def _tensor(info: model_pb2.TensorInfo) -> str:
    dims = ", ".join(d.symbol if d.symbol else str(d.size) for d in info.shape)
    return (
        f"{info.name} {_enum(model_pb2.DataType, info.dtype or model_pb2.DATA_TYPE_FLOAT32).lower()} [{dims}]"
    )


def _input(spec: model_pb2.InputSpec) -> str:
    dtype = _enum(model_pb2.DataType, spec.dtype or model_pb2.DATA_TYPE_FLOAT32).lower()
    return f"{spec.name}:{shape(spec.shape)} {dtype}"


def render_analysis(analysis: model_pb2.ModelAnalysis) -> str:
    """Model facts, a layer table (name, op, weight shape, parameters, MACs) with totals, and warnings."""
    head = [f"Model: {_enum(model_pb2.ModelFormat, analysis.format)}, opset {analysis.opset}"]
    if analysis.producer:
        head[0] += f", produced by {analysis.producer}"
    head += [f"Input:  {_tensor(t)}" for t in analysis.inputs]
    head += [f"Output: {_tensor(t)}" for t in analysis.outputs]
    if analysis.analyzed_inputs:
        head.append("MACs for: " + ", ".join(_input(s) for s in analysis.analyzed_inputs))
    rows = [
        [la.name, la.op_type, shape(la.weight_shape), count(la.parameters), count(la.macs)]
        for la in analysis.layers
    ]
    rows.append(["total", "", "", count(analysis.parameters), count(analysis.macs)])
    layers = table(["layer", "op", "weight shape", "params", "MACs"], rows, "lllrr")
    totals = (
        f"Parameters: {count(analysis.parameters)} ({si(analysis.parameters)})   "
        f"MACs: {count(analysis.macs)} ({si(analysis.macs)})   "
        f"Size: {size(analysis.size_bytes)}   Nodes: {analysis.node_count}   Layers: {len(analysis.layers)}"
    )
    parts = ["\n".join(head), layers, totals]
    if analysis.warnings:
        parts.append("Warnings:\n" + "\n".join(f"  ! {w}" for w in analysis.warnings))
    return "\n\n".join(parts)


def _metrics(stats: report_pb2.ModelStats, variant: report_pb2.ModelVariant | None) -> list[str]:
    lat = stats.latency if stats.HasField("latency") else None
    q = stats.quality if stats.HasField("quality") else None
    compressed = size(stats.compressed_size_bytes)
    if variant is not None and variant.compression_ratio:
        compressed += f" ({variant.compression_ratio:.2f}x)"
    macs = si(stats.macs)
    if variant is not None and variant.macs_reduction:
        macs += f" ({variant.macs_reduction:.2f}x)"
    return [
        count(stats.parameters),
        count(stats.nonzero_parameters),
        size(stats.size_bytes),
        compressed,
        macs,
        f"{lat.p50_ms:.3f}" if lat else DASH,
        f"{lat.p90_ms:.3f}" if lat else DASH,
        f"{lat.p99_ms:.3f}" if lat else DASH,
        f"{lat.throughput_per_s:,.1f}/s" if lat else DASH,
        f"{variant.latency_speedup:.2f}x" if variant is not None and variant.latency_speedup else DASH,
        f"{q.top1_agreement * 100:.2f}%" if q else DASH,
        f"{q.cosine_similarity:.6f}" if q else DASH,
        f"{q.max_abs_error:.3g}" if q else DASH,
    ]


_METRIC_NAMES = [
    "parameters",
    "nonzero",
    "size",
    "compressed size",
    "MACs",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "throughput",
    "speed-up",
    "top-1 agreement",
    "cosine similarity",
    "max abs error",
]


def _protocol(p: report_pb2.BenchmarkProtocol) -> str:
    runtime = " ".join(x for x in (p.runtime, p.runtime_version) if x) or "unknown runtime"
    where = p.device or "unknown device"
    if p.cpu_model:
        where += f" ({p.cpu_model})"
    parts = [runtime]
    if p.execution_provider:
        parts.append(p.execution_provider)
    parts += [
        where,
        f"{p.threads} thread{'s' if p.threads != 1 else ''}",
        f"batch {p.batch_size}",
    ]
    if p.inputs:
        parts.append("inputs " + ", ".join(_input(s) for s in p.inputs))
    parts += [f"warm-up {p.warmup}", f"{p.iterations} iterations"]
    parts.append("interleaved" if p.interleaved else "not interleaved")
    parts.append("thread spinning on" if p.thread_spinning else "thread spinning off")
    line = "Protocol: " + ", ".join(parts)
    if p.quality_inputs:
        line += f"; quality on {p.quality_inputs}"
    return line


def render_report(report: report_pb2.OptimizationReport, *, max_layers: int = 30) -> str:
    """Baseline against each variant (sizes, MACs, latency, quality), changed layers, warnings, protocol."""
    columns = [_metrics(report.baseline, None)] + [_metrics(v.stats, v) for v in report.variants]
    rows = [[name, *(col[i] for col in columns)] for i, name in enumerate(_METRIC_NAMES)]
    headers = ["", "baseline", *(v.name for v in report.variants)]
    parts = [table(headers, rows, "l" + "r" * (len(headers) - 1))]
    if report.layers:
        layer_rows = []
        for la in report.layers[:max_layers]:
            shapes = shape(la.shape_before)
            if la.shape_after and list(la.shape_after) != list(la.shape_before):
                shapes += f" -> {shape(la.shape_after)}"
            layer_rows.append(
                [
                    la.name,
                    la.op_type,
                    shapes,
                    f"{count(la.nonzero_before)} -> {count(la.nonzero_after)}",
                    "skipped" if la.skipped else f"{la.sparsity * 100:.1f}%",
                    f"{si(la.macs_before)} -> {si(la.macs_after)}",
                ]
            )
        layers = table(["layer", "op", "shape", "nonzero", "sparsity", "MACs"], layer_rows, "lllrrr")
        hidden = len(report.layers) - max_layers
        if hidden > 0:
            layers += f"\n... {hidden} more layer{'s' if hidden != 1 else ''} (see report.json)"
        parts.append(layers)
    if report.warnings:
        parts.append("Warnings:\n" + "\n".join(f"  ! {w.code}: {w.message}" for w in report.warnings))
    if report.HasField("protocol"):
        parts.append(_protocol(report.protocol))
    return "\n\n".join(parts)


def _time(ts: timestamp_pb2.Timestamp) -> str:
    moment = _dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def state_name(state: job_pb2.JobState.ValueType) -> str:
    """``SUCCEEDED`` for ``JOB_STATE_SUCCEEDED``."""
    return _enum(job_pb2.JobState, state)


def render_job(job: job_pb2.Job) -> str:
    """The job record as ``key: value`` lines (no report; see :func:`render_report`)."""
    lines = [f"Job {job.id}  {state_name(job.state)}"]
    m = job.model
    model_format = _enum(model_pb2.ModelFormat, m.format)
    lines.append(f"  model:      {m.filename or m.uri} ({model_format}, {size(m.size_bytes)})")
    if m.sha256:
        lines.append(f"  sha256:     {m.sha256}")
    if job.HasField("progress"):
        p = job.progress
        lines.append(
            f"  progress:   {p.fraction * 100:.0f}% {p.stage}{': ' + p.message if p.message else ''}"
        )
    for label, ts in (("created", job.create_time), ("started", job.start_time), ("ended", job.end_time)):
        if ts.seconds or ts.nanos:
            lines.append(f"  {label + ':':<11} {_time(ts)}")
    if job.labels:
        lines.append("  labels:     " + ", ".join(f"{k}={v}" for k, v in sorted(job.labels.items())))
    if job.request_id:
        lines.append(f"  request id: {job.request_id}")
    if job.HasField("error") and job.error.code:
        lines.append(f"  error:      {job.error.message}")
    for artifact in job.artifacts:
        lines.append(f"  artifact:   {artifact.name} ({size(artifact.size_bytes)})")
    return "\n".join(lines)


def render_jobs(jobs: Sequence[job_pb2.Job]) -> str:
    """One row per job: id, state, stage, progress, model, created."""
    rows = [
        [
            j.id,
            state_name(j.state),
            j.progress.stage or DASH,
            f"{j.progress.fraction * 100:.0f}%",
            j.model.filename or j.model.uri or DASH,
            _time(j.create_time) if j.create_time.seconds else DASH,
        ]
        for j in jobs
    ]
    return table(["id", "state", "stage", "progress", "model", "created"], rows, "lllrll")


class ProgressPrinter:
    """Shows job updates: a redrawn one-line bar on a terminal, else one line per stage or state change.

    Call it with each Job (it is an ``on_progress`` callback); call :meth:`close` at the end to finish the
    bar's line.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None, bar_width: int = 24) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.bar_width = bar_width
        self._last_key: tuple[int, str] | None = None
        self._drawn = False

    def __call__(self, job: job_pb2.Job) -> None:
        p = job.progress
        fraction = min(max(p.fraction, 0.0), 1.0)
        stage = p.stage or state_name(job.state).lower()
        if self.tty:
            filled = round(fraction * self.bar_width)
            bar = "#" * filled + "." * (self.bar_width - filled)
            text = f"[{bar}] {fraction * 100:3.0f}% {stage}"
            if p.message:
                text += f": {p.message}"
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + text[:width])
            self._drawn = True
        else:
            key = (int(job.state), stage)
            if key == self._last_key:
                return
            self._last_key = key
            text = f"{fraction * 100:3.0f}% {stage}"
            if p.message:
                text += f": {p.message}"
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the bar's line (on a terminal); idempotent."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
