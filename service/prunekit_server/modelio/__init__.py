"""Model intake and export: ONNX safety checks, TorchScript handling, input resolution."""

from ..archive_scan import prescan_torchscript_archive
from .ingest import (
    IngestedModel,
    data_type_from_onnx,
    data_type_to_onnx,
    graph_inputs,
    ingest,
    resolve_inputs,
)
from .onnx_checks import OnnxLimits, load_onnx_checked
from .torchscript import (
    load_torchscript,
    torchscript_to_onnx,
    write_torchscript_with_weights,
)

__all__ = [
    "IngestedModel",
    "OnnxLimits",
    "data_type_from_onnx",
    "data_type_to_onnx",
    "graph_inputs",
    "ingest",
    "load_onnx_checked",
    "load_torchscript",
    "prescan_torchscript_archive",
    "resolve_inputs",
    "torchscript_to_onnx",
    "write_torchscript_with_weights",
]
