"""prunekit: a thin client for the prunekit model-optimization service.

>>> import prunekit
>>> with prunekit.Client("localhost:50051") as client:  # doctest: +SKIP
...     job = client.optimize("model.onnx", "spec.yaml", on_progress=print)
...     print(job.report.variants[0].latency_speedup)

Depends on grpcio and protobuf only; never on torch, onnx or onnxruntime. The generated messages live in
``prunekit.v1``.
"""

from prunekit._client import TERMINAL_STATES, Client, is_terminal
from prunekit._errors import PrunekitError, SpecError
from prunekit._render import render_analysis, render_report
from prunekit._spec import load_spec, spec_from_dict, spec_to_dict
from prunekit._version import __version__
from prunekit.markdown import render_markdown
from prunekit.v1.job_pb2 import JobState

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
