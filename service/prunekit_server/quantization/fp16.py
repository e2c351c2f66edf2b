"""Float16 conversion with ONNX Runtime's converter; the model's inputs and outputs stay float32.

``onnxruntime.transformers.float16.convert_float_to_float16`` (shipped with
onnxruntime, no extra dependency) turns float32 initializers and compute to
float16, leaves the ops it knows to be unsafe in float32 behind ``Cast``
nodes, and with ``keep_io_types`` casts at the graph's edges, so callers feed
and read float32 as before. Fast on GPUs; CPUs mostly lack float16 kernels, so
there it is usually slower, which the report then shows and flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from prunekit.v1 import spec_pb2

from ..technique_config import check_patterns
from .base import (
    QuantizationDetails,
    QuantizeConfig,
    QuantizeContext,
    QuantizeResult,
    config_for_spec,
    exclude_field,
    matching_nodes,
    register_quantizer,
    register_spec_mode,
)
from .preprocess import quiet


@dataclass(frozen=True)
class Fp16Config(QuantizeConfig):
    """Float16 weights and compute. Invalid values raise ``ValueError``."""

    mode = "fp16"
    suffix = "fp16"

    keep_io_types: bool = field(
        default=True, metadata={"description": "Keep float32 graph inputs and outputs (Cast at the edges)."}
    )
    exclude: tuple[str, ...] = exclude_field()

    def __post_init__(self) -> None:
        if not isinstance(self.keep_io_types, bool):
            raise ValueError("keep_io_types must be a boolean")
        object.__setattr__(self, "exclude", check_patterns(self.exclude, "exclude"))


@register_spec_mode(spec_pb2.QUANTIZE_MODE_FP16)
def fp16_from_spec(q: spec_pb2.QuantizeSpec) -> Fp16Config:
    """The config for an FP16 (or AUTO candidate) ``QuantizeSpec``."""
    return config_for_spec(lambda: Fp16Config(exclude=tuple(q.exclude)))


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
