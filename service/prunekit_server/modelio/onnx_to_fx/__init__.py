"""prunekit's own ONNX -> torch.fx converter and the way back.

:func:`onnx_to_fx` turns an ONNX model into a ``torch.fx.GraphModule`` made of real
layers (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.Linear``, ``nn.LayerNorm``,
``nn.Embedding``...) and plain torch functions, which Torch-Pruning can trace and
prune and which can be fine-tuned. Sizes frozen into the ONNX graph (Reshape
targets, Split sizes, Expand shapes) are re-derived from the data, so the graph keeps
working after channels are removed (:mod:`.shapes`). :func:`fx_to_onnx` and
:func:`fx_to_torchscript` write the result back.

One module per concept: :mod:`.registry` (the table of op converters),
:mod:`.convert` (the driver), :mod:`.builder` (the fx graph and the sample run),
:mod:`.node` (what a converter sees), :mod:`.values`, :mod:`.shapes`,
:mod:`.naming`, :mod:`.patterns` (LayerNorm fusion), the ``ops_*`` modules (the
converters), :mod:`.export`.
"""

from .convert import EXAMPLE_BATCH, model_opset, onnx_to_fx
from .errors import UnsupportedOp
from .export import fx_to_onnx, fx_to_torchscript
from .registry import supported_ops

__all__ = [
    "EXAMPLE_BATCH",
    "UnsupportedOp",
    "fx_to_onnx",
    "fx_to_torchscript",
    "model_opset",
    "onnx_to_fx",
    "supported_ops",
]
