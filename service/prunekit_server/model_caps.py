"""What one model may cost the worker that holds it, derived from that worker's memory.

A worker keeps several copies of a model's tensors at once (the parsed ONNX, the torch graph, the pruned
copy, ONNX Runtime sessions) and many times its inputs in activations. So, for a worker of ``memory_bytes``:

- ``max_tensor_bytes`` = memory / :data:`TENSOR_SHARE`: an ONNX model's initializers and tensor
  attributes in total, and a TorchScript archive's unpacked entries in total;
- ``max_input_bytes`` = memory / :data:`INPUT_SHARE`: one batch of the model's inputs, all together;
- ``max_nodes``: nodes once every model-local function call is inlined (a fixed cap).

Each is checked before the work it bounds: declared inputs at CreateJob and AnalyzeModel (the spec
rules), the rest as the worker reads the model, before conversion or allocation. A refusal is
RESOURCE_EXHAUSTED ``MODEL_TOO_LARGE`` whose metadata names the cap and its value, and the worker memory
it was derived from. Importing this module loads no model library.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Code, ServiceError

TENSOR_SHARE = 4
INPUT_SHARE = 16
MAX_NODES = 200_000
DEFAULT_MEMORY_BYTES = 16 << 30
"""The memory assumed where none is given (code run outside a worker: tests, tools)."""


@dataclass(frozen=True)
class ModelCaps:
    """The caps of a worker with ``memory_bytes`` of memory."""

    memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_nodes: int = MAX_NODES

    @property
    def max_tensor_bytes(self) -> int:
        return self.memory_bytes // TENSOR_SHARE

    @property
    def max_input_bytes(self) -> int:
        return self.memory_bytes // INPUT_SHARE

    def too_large(self, cap: str, message: str, **context: str) -> ServiceError:
        """MODEL_TOO_LARGE for being over ``cap`` (an attribute name); ``message`` ends with the cap."""
        value = getattr(self, cap)
        return ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "MODEL_TOO_LARGE",
            f"{message}; this server's cap is {value} ({cap})",
            metadata={cap: str(value), "worker_memory_bytes": str(self.memory_bytes), **context},
        )
