"""Plain-text rendering for terminals: tables of analyses, reports and jobs, and a job progress display."""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from google.protobuf import timestamp_pb2

from prunekit.text.dynamic_tables import dynamic_exit_rows, dynamic_model_rows, dynamic_summary
from prunekit.text.format import DASH, count, enum_name, shape, si, size, table
from prunekit.text.report_tables import latency_rows, layer_rows, protocol_parts, variant_rows
from prunekit.text.training_tables import (
    accuracy_not_measured,
    data_lines,
    finetune_progress_text,
    finetune_rows,
    finetune_summary,
)
from prunekit.v1 import job_pb2, model_pb2, report_pb2

__all__ = [
    "ProgressPrinter",
    "duration",
    "render_analysis",
    "render_job",
    "render_jobs",
    "render_report",
    "shape",
    "size",
    "table",
]


def _enum(enum_type: object, number: int) -> str:
    return enum_name(enum_type, number)


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
    if analysis.sensitivity:
        parts.append(_sensitivity(analysis.sensitivity))
    if analysis.warnings:
        parts.append("Warnings:\n" + "\n".join(f"  ! {w}" for w in analysis.warnings))
    return "\n\n".join(parts)


def _sensitivity(curves: Sequence[model_pb2.LayerSensitivity]) -> str:
    """One row per layer group, one column per ratio: cosine similarity (top-1 agreement)."""
    ratios = sorted({r for c in curves for r in c.ratios})
    rows = []
    for curve in curves:
        values = zip(curve.cosine_similarity, curve.top1_agreement, strict=False)
        points = dict(zip(curve.ratios, values, strict=False))
        cells = [f"{points[r][0]:.3f} ({points[r][1]:.2f})" if r in points else DASH for r in ratios]
        rows.append([curve.layer, count(curve.channels), *cells])
    title = "Sensitivity: cosine similarity (top-1 agreement) with each layer group alone pruned by the ratio"
    headers = ["layer", "channels", *(f"{r:g}" for r in ratios)]
    return title + "\n" + table(headers, rows, "lr" + "r" * len(ratios))


def _protocol(p: report_pb2.BenchmarkProtocol) -> str:
    parts, notes = protocol_parts(p)
    return "Protocol: " + ", ".join(parts) + "".join(f"; {note}" for note in notes)


def render_report(report: report_pb2.OptimizationReport, *, max_layers: int = 30) -> str:
    """Baseline against each variant (sizes, MACs, latency, quality, accuracy, flags), the latency of every
    runtime and batch size when there are several, a DYNAMIC job's per-input latency and exits (or
    tokens), the data and the fine-tuning runs, changed layers, warnings, and the protocol last. A report
    without accuracy says so first."""
    headers, rows = variant_rows(report)
    parts = []
    not_measured = accuracy_not_measured(report)
    if not_measured is not None:
        parts.append(f"Accuracy NOT measured: {not_measured}")
    parts.append(table(headers, rows, "l" + "r" * (len(headers) - 1)))
    measured = [len(s.latencies) for s in [report.baseline, *(v.stats for v in report.variants)]]
    if max(measured, default=0) > 1:
        lat_headers, lat_rows = latency_rows(report)
        parts.append(table(lat_headers, lat_rows, "llr" + "r" * (len(lat_headers) - 3)))
    if report.HasField("dynamic"):
        summary = "\n".join(f"  {line}" for line in dynamic_summary(report)[:2])
        parts.append("Dynamic, per input:\n" + summary)
        for headers, rows in (dynamic_model_rows(report), dynamic_exit_rows(report)):
            parts.append(table(headers, rows, "l" + "r" * (len(headers) - 1)))
    if report.HasField("data"):
        parts.append("Data:\n" + "\n".join(f"  {line}" for line in data_lines(report)))
    if report.HasField("finetune"):
        ft_headers, ft_rows = finetune_rows(report)
        summary = "\n".join(f"  {line}" for line in finetune_summary(report))
        parts.append("Fine-tuning:\n" + summary + "\n" + table(ft_headers, ft_rows, "lrrlll" + "l" * 6))
    if report.layers:
        layer_headers, layer_table, hidden = layer_rows(report, max_layers)
        layers = table(layer_headers, layer_table, "lllrrr")
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


def _finetune_key(p: job_pb2.JobProgress) -> tuple[str, int]:
    """While fine-tuning: the phase and which tenth of its steps is done (a new line for each)."""
    if not p.HasField("finetune"):
        return ("", 0)
    ft = p.finetune
    return (ft.phase, ft.step * 10 // ft.total_steps if ft.total_steps > 0 else ft.step)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class ProgressPrinter:
    """Shows job updates: a redrawn one-line bar on a terminal, else one line per stage or state change
    (and, while fine-tuning, per phase and tenth of its steps). Fine-tuning shows phase, step/total, epoch,
    loss and the last eval metric.

    Call it with each Job (it is an ``on_progress`` callback); call :meth:`close` at the end to finish the
    bar's line.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        bar_width: int = 24,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self._clock = clock
        self.tty = stream.isatty() if tty is None else tty
        self.bar_width = bar_width
        self._last_key: tuple[object, ...] | None = None
        self._drawn = False
        self._started: float | None = None

    def _timing(self, fraction: float) -> str:
        """`` (12 s elapsed, ~40 s left)``: the time since the first update, and what the fraction done
        so far predicts for the rest (once there is enough of it to predict from)."""
        now = self._clock()
        if self._started is None:
            self._started = now
        elapsed = now - self._started
        text = f" ({duration(elapsed)} elapsed"
        if 0.05 <= fraction < 1.0 and elapsed >= 1.0:
            text += f", ~{duration(elapsed * (1.0 - fraction) / fraction)} left"
        return text + ")"

    def __call__(self, job: job_pb2.Job) -> None:
        p = job.progress
        fraction = min(max(p.fraction, 0.0), 1.0)
        stage = p.stage or state_name(job.state).lower()
        detail = p.message
        if p.HasField("finetune"):
            detail = finetune_progress_text(p.finetune)
        if self.tty:
            filled = round(fraction * self.bar_width)
            bar = "#" * filled + "." * (self.bar_width - filled)
            text = f"[{bar}] {fraction * 100:3.0f}% {stage}"
            if detail:
                text += f": {detail}"
            text += self._timing(fraction)
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + text[:width])
            self._drawn = True
        else:
            key = (int(job.state), stage, *_finetune_key(p))
            if key == self._last_key:
                return
            self._last_key = key
            text = f"{fraction * 100:3.0f}% {stage}"
            if detail:
                text += f": {detail}"
            self.stream.write(text + self._timing(fraction) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the bar's line (on a terminal); idempotent."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
