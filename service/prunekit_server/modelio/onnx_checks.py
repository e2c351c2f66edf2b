"""Safety checks for untrusted ONNX files, run before any other code reads the model.

:func:`load_onnx_checked` parses the bytes as a protobuf ``ModelProto`` (never as
text or JSON, never following external data) and walks everything a native parser
would later trust: initializers, tensor attributes (``Constant`` values included),
subgraphs of ``If``/``Loop``/``Scan`` and model-local functions. Only when that walk
passes does it hand the model to ``onnx.checker``.

Codes: bytes that are not a well-formed ONNX model are ``INVALID_MODEL``
(INVALID_ARGUMENT); a well-formed model this service will not process (external
data, an op domain or opset outside the allow-list, a rank or nesting limit
exceeded, sparse tensors) is ``UNSUPPORTED_MODEL`` (FAILED_PRECONDITION); one over
a cost cap of :class:`~prunekit_server.model_caps.ModelCaps` (nodes once local
functions are inlined, tensor bytes) is ``MODEL_TOO_LARGE`` (RESOURCE_EXHAUSTED),
found before the checker or anything else expands the model.

Allowed op domains default to the standard ones, ``""``/``ai.onnx`` and
``ai.onnx.ml``. ``com.microsoft`` (ONNX Runtime contrib ops) is left out on
purpose: its kernels are runtime-specific, outside the ONNX spec and checker, and
nothing downstream (conversion, pruning) understands them. Add it to
``OnnxLimits.allowed_domains`` to accept such models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, TensorProto

from ..errors import invalid_model, unsupported_model
from ..model_caps import ModelCaps
from .onnx_calls import inlined_node_count

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
_MAX_MESSAGE = 400

_BITS: dict[int, int] = {
    TensorProto.FLOAT: 32,
    TensorProto.UINT8: 8,
    TensorProto.INT8: 8,
    TensorProto.UINT16: 16,
    TensorProto.INT16: 16,
    TensorProto.INT32: 32,
    TensorProto.INT64: 64,
    TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16,
    TensorProto.DOUBLE: 64,
    TensorProto.UINT32: 32,
    TensorProto.UINT64: 64,
    TensorProto.COMPLEX64: 64,
    TensorProto.COMPLEX128: 128,
    TensorProto.BFLOAT16: 16,
    TensorProto.FLOAT8E4M3FN: 8,
    TensorProto.FLOAT8E4M3FNUZ: 8,
    TensorProto.FLOAT8E5M2: 8,
    TensorProto.FLOAT8E5M2FNUZ: 8,
    TensorProto.UINT4: 4,
    TensorProto.INT4: 4,
    TensorProto.FLOAT4E2M1: 4,
    TensorProto.FLOAT8E8M0: 8,
    TensorProto.UINT2: 2,
    TensorProto.INT2: 2,
}
"""Bits per element of every tensor type whose storage size this module can check."""

_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


@dataclass(frozen=True)
class OnnxLimits:
    """Caps applied by :func:`load_onnx_checked`.

    ``caps.max_nodes`` bounds the nodes in the main graph, subgraphs and local functions
    as written, and again once every local function call is inlined;
    ``caps.max_tensor_bytes`` is the total payload of all tensors (initializers and
    tensor attributes); ``max_rank`` applies to tensors and declared value shapes;
    ``max_subgraph_depth`` is how deep ``If``/``Loop``/``Scan`` bodies may nest.
    ``min_opset``/``max_opset`` bound the default-domain opset.
    """

    caps: ModelCaps = field(default_factory=ModelCaps)
    max_rank: int = 8
    max_subgraph_depth: int = 4
    min_opset: int = 7
    max_opset: int = field(default_factory=onnx.defs.onnx_opset_version)
    allowed_domains: frozenset[str] = STANDARD_DOMAINS


def load_onnx_checked(path: Path, limits: OnnxLimits = OnnxLimits()) -> onnx.ModelProto:
    """Parse ``path`` as a binary ONNX model and return it once every check passed.

    External data is never loaded. Raises :class:`~prunekit_server.errors.ServiceError`
    (``INVALID_MODEL`` or ``UNSUPPORTED_MODEL``) for anything it rejects.
    """
    name = path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise invalid_model(f"{name} could not be read: {exc.strerror or exc}") from exc
    if not data:
        raise invalid_model(f"{name} is not an ONNX model: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise invalid_model(f"{name} is not an ONNX model: {_one_line(str(exc)) or 'bad protobuf'}") from exc
    if not model.HasField("graph") or len(model.graph.node) == 0:
        what = "it has no graph" if not model.HasField("graph") else "its graph has no nodes"
        raise invalid_model(f"{name} is not an ONNX model: {what}")
    _Walker(name, limits).check_model(model)
    caps = limits.caps
    if len(model.functions) and inlined_node_count(model, caps.max_nodes, name) > caps.max_nodes:
        raise caps.too_large(
            "max_nodes", f"{name}: more than {caps.max_nodes} nodes once its local functions are inlined"
        )
    try:
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        raise invalid_model(f"{name} is not a valid ONNX model: {_one_line(str(exc))}") from exc
    return model


def _one_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


class _Walker:
    """One pass over a model, accumulating node and byte counts against the limits."""

    def __init__(self, name: str, limits: OnnxLimits) -> None:
        self.name = name
        self.limits = limits
        self.nodes = 0
        self.bytes = 0
        self.functions: set[tuple[str, str]] = set()
        self.function_domains: set[str] = set()

    def check_model(self, model: onnx.ModelProto) -> None:
        self.functions = {(f.domain, f.name) for f in model.functions}
        self.function_domains = {f.domain for f in model.functions} - self.limits.allowed_domains
        self._check_opsets(model.opset_import, "the model")
        for function in model.functions:
            self._check_opsets(function.opset_import, f"function {function.name!r}")
            self._check_nodes(function.node, depth=0)
        self._check_graph(model.graph, depth=0)

    def _check_opsets(self, opsets: Iterable[onnx.OperatorSetIdProto], where: str) -> None:
        for opset in opsets:
            domain, version = opset.domain, opset.version
            if domain in self.function_domains:
                continue
            if domain not in self.limits.allowed_domains:
                raise unsupported_model(
                    f"{self.name}: {where} imports op domain {domain!r}, which this server does not support "
                    f"(supported: {', '.join(repr(d) for d in sorted(self.limits.allowed_domains))})",
                    domain=domain,
                )
            if domain in _DEFAULT_DOMAINS:
                low, high = self.limits.min_opset, self.limits.max_opset
            elif domain == "ai.onnx.ml":
                low, high = 1, onnx.defs.onnx_ml_opset_version()
            else:
                low, high = 1, 1 << 30
            if not low <= version <= high:
                label = "ai.onnx" if domain in _DEFAULT_DOMAINS else domain
                raise unsupported_model(
                    f"{self.name}: {where} uses opset {version} of domain {label!r}; "
                    f"this server supports opsets {low} to {high}",
                    domain=label,
                    opset=str(version),
                )

    def _check_graph(self, graph: GraphProto, depth: int) -> None:
        if depth > self.limits.max_subgraph_depth:
            raise unsupported_model(
                f"{self.name}: subgraphs are nested more than {self.limits.max_subgraph_depth} levels deep"
            )
        if len(graph.sparse_initializer):
            raise unsupported_model(f"{self.name}: sparse initializers are not supported")
        for tensor in graph.initializer:
            self._check_tensor(tensor, f"initializer {tensor.name!r}")
        for value in [*graph.input, *graph.output, *graph.value_info]:
            kind = value.type.WhichOneof("value")
            if kind == "tensor_type" and value.type.tensor_type.HasField("shape"):
                rank = len(value.type.tensor_type.shape.dim)
                if rank > self.limits.max_rank:
                    raise unsupported_model(
                        f"{self.name}: value {value.name!r} has rank {rank}; limit {self.limits.max_rank}"
                    )
        self._check_nodes(graph.node, depth)

    def _check_nodes(self, nodes: Iterable[onnx.NodeProto], depth: int) -> None:
        for node in nodes:
            self.nodes += 1
            if self.nodes > self.limits.caps.max_nodes:
                raise self.limits.caps.too_large(
                    "max_nodes", f"{self.name}: more than {self.nodes - 1} nodes"
                )
            if (
                node.domain not in self.limits.allowed_domains
                and (node.domain, node.op_type) not in self.functions
            ):
                raise unsupported_model(
                    f"{self.name}: node {node.name or node.op_type!r} uses op {node.op_type!r} "
                    f"of unsupported domain {node.domain!r}",
                    domain=node.domain,
                )
            for attr in node.attribute:
                self._check_attribute(node, attr, depth)

    def _check_attribute(self, node: onnx.NodeProto, attr: AttributeProto, depth: int) -> None:
        where = f"attribute {attr.name!r} of node {node.name or node.op_type!r}"
        if attr.HasField("sparse_tensor") or len(attr.sparse_tensors):
            raise unsupported_model(f"{self.name}: {where} is a sparse tensor, which is not supported")
        if attr.HasField("t"):
            self._check_tensor(attr.t, where)
        for tensor in attr.tensors:
            self._check_tensor(tensor, where)
        if attr.HasField("g"):
            self._check_graph(attr.g, depth + 1)
        for graph in attr.graphs:
            self._check_graph(graph, depth + 1)

    def _check_tensor(self, tensor: TensorProto, where: str) -> None:
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            raise unsupported_model(
                f"{self.name}: {where} refers to external data (location {location[:200]!r}); "
                "upload a model with its weights embedded (onnx.save(..., save_as_external_data=False))",
            )
        if len(tensor.dims) > self.limits.max_rank:
            raise unsupported_model(
                f"{self.name}: {where} has rank {len(tensor.dims)}; the limit is {self.limits.max_rank}"
            )
        if any(d < 0 for d in tensor.dims):
            raise invalid_model(f"{self.name} is not a valid ONNX model: {where} has a negative dimension")
        dtype = tensor.data_type
        if dtype == TensorProto.UNDEFINED:
            raise invalid_model(f"{self.name} is not a valid ONNX model: {where} has no data type")
        if dtype == TensorProto.STRING:
            self._check_count(tensor, where, "string_data", _element_count(tensor.dims, 1 << 40, self, where))
            self._add_bytes(sum(len(s) for s in tensor.string_data), where)
            return
        bits = _BITS.get(dtype)
        if bits is None:
            known = dtype in TensorProto.DataType.values()
            type_name = TensorProto.DataType.Name(dtype) if known else f"number {dtype} (unknown)"
            raise unsupported_model(
                f"{self.name}: {where} has element type {type_name}, which is not supported"
            )
        limit = self.limits.caps.max_tensor_bytes * 8 // bits + 1
        count = _element_count(tensor.dims, limit, self, where)
        nbytes = (count * bits + 7) // 8
        if tensor.HasField("raw_data"):
            if len(tensor.raw_data) != nbytes:
                raise invalid_model(
                    f"{self.name} is not a valid ONNX model: {where} holds {len(tensor.raw_data)} bytes "
                    f"but its shape {list(tensor.dims)} needs {nbytes}"
                )
            self._check_no_other_fields(tensor, where, None)
        else:
            field_name = onnx.helper.tensor_dtype_to_field(dtype)
            per_entry = 2 if dtype in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1
            packed = 8 // bits if bits < 8 else 1
            self._check_count(tensor, where, field_name, -(-count // packed) * per_entry)
        self._add_bytes(nbytes, where)

    def _check_count(self, tensor: TensorProto, where: str, field_name: str, expected: int) -> None:
        actual = len(getattr(tensor, field_name))
        if actual != expected:
            raise invalid_model(
                f"{self.name} is not a valid ONNX model: {where} has {actual} values in {field_name} "
                f"but its shape {list(tensor.dims)} needs {expected}"
            )
        self._check_no_other_fields(tensor, where, field_name)

    def _check_no_other_fields(self, tensor: TensorProto, where: str, keep: str | None) -> None:
        for other in _TYPED_FIELDS:
            if other != keep and len(getattr(tensor, other)):
                raise invalid_model(
                    f"{self.name} is not a valid ONNX model: {where} stores data in {other}, "
                    "which does not match its element type"
                )

    def _add_bytes(self, nbytes: int, where: str) -> None:
        self.bytes += nbytes
        if self.bytes > self.limits.caps.max_tensor_bytes:
            raise self.limits.caps.too_large(
                "max_tensor_bytes", f"{self.name}: its tensors take at least {self.bytes} bytes (at {where})"
            )


def _element_count(dims: Iterable[int], limit: int, walker: _Walker, where: str) -> int:
    """Product of ``dims``, stopping with UNSUPPORTED_MODEL as soon as it passes ``limit``."""
    shape = [int(d) for d in dims]
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > limit:
            raise walker.limits.caps.too_large(
                "max_tensor_bytes", f"{walker.name}: {where} is too large (shape {shape})"
            )
    return count
