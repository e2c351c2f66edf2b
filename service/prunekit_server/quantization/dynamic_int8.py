"""Dynamic INT8 quantization with ONNX Runtime: int8 weights, activations quantized at run time.

No calibration: each activation's range is computed on every run, and the
quantizable ops become integer ops (``MatMulInteger``, ``ConvInteger``...).
It suits Transformer-style MatMul models; on convolutional models and on
CPUs without fast integer kernels it is often slower than float32, which
the report then shows and flags.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from prunekit.spec.quantize_configs import DynamicInt8Config

from .base import (
    QuantizationDetails,
    QuantizeContext,
    QuantizeResult,
    matching_nodes,
    register_quantizer,
)
from .preprocess import preprocessed, quiet


@register_quantizer(DynamicInt8Config)
def quantize_dynamic_int8(
    model: Path, output: Path, config: DynamicInt8Config, context: QuantizeContext
) -> QuantizeResult:
    """Pre-process and write the dynamically quantized model."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, warnings = preprocessed(model, context)
    graph = onnx.load(str(source), load_external_data=False)
    excluded = matching_nodes(graph, config.exclude)
    gemms = {n.name for n in graph.graph.node if n.op_type == "Gemm"}
    # the dynamic quantizer first rewrites each Gemm into "<name>_MatMul" + "<name>_Add"
    names = [*excluded, *(f"{name}_MatMul" for name in excluded if name in gemms)]
    with quiet():
        quantize_dynamic(
            str(source),
            str(output),
            per_channel=config.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=names,
        )
    details = QuantizationDetails(
        mode=config.mode,
        format="QOperator integer ops",
        tool=f"onnxruntime {ort.__version__}",
        activation_type="uint8 (computed per run)",
        weight_type="int8",
        per_channel=config.per_channel,
        excluded_nodes=excluded,
    )
    return QuantizeResult(path=output, details=details, warnings=warnings)
