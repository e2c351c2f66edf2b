"""Float16 conversion with ONNX Runtime's converter; the model's inputs and outputs stay float32.

``onnxruntime.transformers.float16.convert_float_to_float16`` (shipped with
onnxruntime, no extra dependency) turns float32 initializers and compute to
float16, leaves the ops it knows to be unsafe in float32 behind ``Cast``
nodes, and with ``keep_io_types`` casts at the graph's edges, so callers feed
and read float32 as before. Fast on GPUs; CPUs mostly lack float16 kernels, so
there it is usually slower, which the report then shows and flags.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from prunekit.spec.quantize_configs import Fp16Config

from .base import (
    QuantizationDetails,
    QuantizeContext,
    QuantizeResult,
    matching_nodes,
    register_quantizer,
)
from .preprocess import quiet


@register_quantizer(Fp16Config)
def convert_fp16(model: Path, output: Path, config: Fp16Config, context: QuantizeContext) -> QuantizeResult:
    """Write the float16 model; nodes matching ``exclude`` stay float32."""
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = onnx.load(str(model), load_external_data=False)
    excluded = matching_nodes(source, config.exclude)
    with quiet():
        converted = convert_float_to_float16(
            source, keep_io_types=config.keep_io_types, node_block_list=list(excluded) or None
        )
    onnx.save(converted, str(output))
    details = QuantizationDetails(
        mode=config.mode,
        format="float16",
        tool=f"onnxruntime.transformers.float16 (onnxruntime {ort.__version__})",
        activation_type="float16",
        weight_type="float16",
        excluded_nodes=excluded,
    )
    return QuantizeResult(path=output, details=details)
