"""A report's provenance: what the job gave (job id, model name and digest, attempt), plus the spec, the
times and the software and device this worker measured with."""

from __future__ import annotations

import platform
from importlib import metadata

from google.protobuf import timestamp_pb2

from prunekit.v1 import report_pb2, spec_pb2

from ..measure.latency import cpu_model
from ..measure.settings import RunSettings

_PACKAGES = {
    "prunekit_version": "prunekit",
    "onnxruntime_version": "onnxruntime",
    "torch_version": "torch",
    "onnx_version": "onnx",
}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def begin(given: report_pb2.Provenance | None, spec: spec_pb2.OptimizationSpec) -> report_pb2.Provenance:
    """``given`` (or an empty one) with the spec, the start time and the software versions filled in."""
    out = report_pb2.Provenance()
    if given is not None:
        out.CopyFrom(given)
    out.spec.CopyFrom(spec)
    out.start_time.CopyFrom(_now())
    for field, package in _PACKAGES.items():
        setattr(out, field, _version(package))
    out.python_version = platform.python_version()
    return out


def finish(provenance: report_pb2.Provenance, settings: RunSettings) -> report_pb2.Provenance:
    """The end time and the benchmark's device (``cpu (<CPU model>)``, ``cuda (<GPU name>)``) set."""
    provenance.end_time.CopyFrom(_now())
    what = cpu_model()
    if settings.device == "cuda":
        import torch

        if torch.cuda.is_available():
            what = torch.cuda.get_device_name(0)
    provenance.device = f"{settings.device} ({what})" if what else str(settings.device)
    return provenance
