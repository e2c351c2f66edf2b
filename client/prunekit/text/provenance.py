"""A report's provenance as lines of text, for report.md and report.html alike."""

from __future__ import annotations

import json

from google.protobuf import json_format

from prunekit.v1 import report_pb2

__all__ = ["provenance_lines", "spec_line"]


def _time(stamp: object) -> str:
    text = stamp.ToJsonString()  # type: ignore[attr-defined]
    return str(text).replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"


def spec_line(report: report_pb2.OptimizationReport) -> str:
    """The spec the job ran, as one line of JSON (proto field names)."""
    spec = json_format.MessageToDict(report.provenance.spec, preserving_proto_field_name=True)
    return json.dumps(spec, separators=(", ", ": "), sort_keys=True)


def provenance_lines(report: report_pb2.OptimizationReport) -> list[str]:
    """Job, model, times, software and device; empty for a report without provenance."""
    if not report.HasField("provenance"):
        return []
    p = report.provenance
    lines = []
    if p.job_id:
        lines.append(f"job: {p.job_id}" + (f" (worker start {p.attempt})" if p.attempt else ""))
    if p.model_filename or p.model_sha256:
        lines.append(f"model: {p.model_filename or '-'}, sha256 {p.model_sha256 or '-'}")
    if p.HasField("start_time") and p.HasField("end_time"):
        seconds = (p.end_time.ToNanoseconds() - p.start_time.ToNanoseconds()) / 1e9
        lines.append(f"ran: {_time(p.start_time)} to {_time(p.end_time)} ({seconds:.1f} s)")
    software = [
        (name, version)
        for name, version in (
            ("prunekit", p.prunekit_version),
            ("ONNX Runtime", p.onnxruntime_version),
            ("torch", p.torch_version),
            ("onnx", p.onnx_version),
            ("Python", p.python_version),
        )
        if version
    ]
    if software:
        lines.append("software: " + ", ".join(f"{name} {version}" for name, version in software))
    if p.device:
        lines.append(f"device: {p.device}")
    if p.HasField("spec"):
        lines.append(f"spec: {spec_line(report)}")
    return lines
