"""The error every conversion failure becomes: FAILED_PRECONDITION / UNSUPPORTED_MODEL."""

from __future__ import annotations

from ...errors import Code, ServiceError


class UnsupportedOp(ServiceError):  # noqa: N818 - the public name of this error
    """An ONNX node the converter cannot turn into torch: names the op, the node and the opset.

    ``metadata`` carries ``op_type``, ``node``, ``domain`` and ``opset`` so callers
    (reports, the pruning stage) can act on them without parsing the message.
    """

    def __init__(self, op_type: str, node: str, domain: str, opset: int, detail: str = "") -> None:
        label = domain or "ai.onnx"
        message = f"cannot convert op {op_type!r} (node {node!r}, domain {label!r}, opset {opset}) to torch"
        if detail:
            message += f": {detail}"
        super().__init__(
            Code.FAILED_PRECONDITION,
            "UNSUPPORTED_MODEL",
            message,
            [],
            {"op_type": op_type, "node": node, "domain": label, "opset": str(opset)},
        )


class ConversionError(Exception):
    """Raised inside an op converter; the driver turns it into :class:`UnsupportedOp`."""
