"""prunekit: a thin client for the prunekit model-optimization service.

>>> import prunekit
>>> with prunekit.Client("localhost:50051") as client:  # doctest: +SKIP
...     job = client.optimize("model.onnx", "spec.yaml", on_progress=print)
...     print(job.report.variants[0].latency_speedup)

Depends on grpcio and protobuf only; never on torch, onnx or onnxruntime. Besides the SDK the package holds
three rooms that need protobuf alone, shared with the server: the generated messages (:mod:`prunekit.v1`), the
spec vocabulary and rules (:mod:`prunekit.spec`) and the text renderings of reports (:mod:`prunekit.text`).
The names below are loaded on first use, so importing one of those rooms never loads grpc, yaml or the client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prunekit._version import __version__

if TYPE_CHECKING:
    from prunekit._client import TERMINAL_STATES, Client, is_terminal
    from prunekit._errors import PrunekitError, SpecError
    from prunekit._render import render_analysis, render_report
    from prunekit._spec import load_spec, spec_from_dict, spec_to_dict
    from prunekit.text.markdown import render_markdown
    from prunekit.v1.job_pb2 import JobState

_HOMES = {
    "TERMINAL_STATES": "prunekit._client",
    "Client": "prunekit._client",
    "is_terminal": "prunekit._client",
    "PrunekitError": "prunekit._errors",
    "SpecError": "prunekit._errors",
    "render_analysis": "prunekit._render",
    "render_report": "prunekit._render",
    "load_spec": "prunekit._spec",
    "spec_from_dict": "prunekit._spec",
    "spec_to_dict": "prunekit._spec",
    "render_markdown": "prunekit.text.markdown",
    "JobState": "prunekit.v1.job_pb2",
}

__all__ = [
    "TERMINAL_STATES",
    "Client",
    "JobState",
    "PrunekitError",
    "SpecError",
    "__version__",
    "is_terminal",
    "load_spec",
    "render_analysis",
    "render_markdown",
    "render_report",
    "spec_from_dict",
    "spec_to_dict",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
