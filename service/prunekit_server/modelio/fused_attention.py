"""ONNX for PyTorch's fused attention fast paths, so TorchScript models using them export.

A module traced (or run) in eval mode without gradients takes the fast paths of
``nn.MultiheadAttention`` (``aten::_native_multi_head_attention``) and
``nn.TransformerEncoderLayer`` (``aten::_transformer_encoder_layer_fwd``); the
legacy ONNX exporter knows neither. :func:`register` gives both a symbolic that
writes what the ops compute in plain ONNX: the packed in-projection split into
query, key and value projections (MatMul + Add with constant weights, which the
converter makes Linear layers), heads by Reshape/Transpose, scaled dot-product
softmax attention, the out-projection; for the encoder layer also its two
LayerNorms, the feed-forward block (ReLU or GELU) and the residual adds, in
pre- or post-norm order. Masks are not supported (the export fails naming the op).

It also gives ``aten::diff`` (first differences, which Hugging Face's mask
utilities trace into decoder models) the symbolic the exporter lacks, and
``aten::cumsum`` one that sums booleans as int64 like torch (the exporter's own
writes a CumSum of booleans, which ONNX Runtime refuses).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.onnx import symbolic_helper
from torch.onnx._internal.torchscript_exporter import _type_utils
from torch.onnx.utils import register_custom_op_symbolic

__all__ = ["register"]

_OPSET = 17
_registered = False
_SUMMED_AS_INT64 = (
    _type_utils.JitScalarType.BOOL,
    _type_utils.JitScalarType.UINT8,
    _type_utils.JitScalarType.INT8,
    _type_utils.JitScalarType.INT16,
    _type_utils.JitScalarType.INT,
)


def _const(value: object, name: str, kind: str = "i") -> Any:
    return symbolic_helper._get_const(value, kind, name)  # type: ignore[no-untyped-call]


def _ints(g: Any, values: list[int]) -> Any:
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _linear(g: Any, x: Any, weight: Any, bias: Any) -> Any:
    out = g.op("MatMul", x, g.op("Transpose", weight, perm_i=[1, 0]))
    return out if symbolic_helper._is_none(bias) else g.op("Add", out, bias)


def _attention(
    g: Any, query: Any, key: Any, value: Any, heads: int, embed: int, weights: tuple[Any, ...]
) -> Any:
    qkv_weight, qkv_bias, proj_weight, proj_bias = weights
    thirds = _ints(g, [embed, embed, embed])
    w_q, w_k, w_v = g.op("Split", qkv_weight, thirds, axis_i=0, outputs=3)
    b_q, b_k, b_v = g.op("Split", qkv_bias, thirds, axis_i=0, outputs=3)
    per_head = _ints(g, [0, -1, heads, embed // heads])
    q = g.op("Transpose", g.op("Reshape", _linear(g, query, w_q, b_q), per_head), perm_i=[0, 2, 1, 3])
    k = g.op("Transpose", g.op("Reshape", _linear(g, key, w_k, b_k), per_head), perm_i=[0, 2, 3, 1])
    v = g.op("Transpose", g.op("Reshape", _linear(g, value, w_v, b_v), per_head), perm_i=[0, 2, 1, 3])
    scale = g.op("Constant", value_t=torch.tensor(1.0 / math.sqrt(embed // heads)))
    scores = g.op("Softmax", g.op("Mul", g.op("MatMul", q, k), scale), axis_i=-1)
    merged = g.op(
        "Reshape", g.op("Transpose", g.op("MatMul", scores, v), perm_i=[0, 2, 1, 3]), _ints(g, [0, -1, embed])
    )
    return _linear(g, merged, proj_weight, proj_bias)


def _no_mask(mask: Any, op: str) -> None:
    if not symbolic_helper._is_none(mask):
        raise torch.onnx.errors.SymbolicValueError(f"{op} with an attention mask is not supported", mask)


def _native_multi_head_attention(
    g: Any, query: Any, key: Any, value: Any, embed_dim: Any, num_head: Any, *rest: Any
) -> Any:
    qkv_weight, qkv_bias, proj_weight, proj_bias = rest[:4]
    _no_mask(rest[4] if len(rest) > 4 else None, "aten::_native_multi_head_attention")
    embed, heads = _const(embed_dim, "embed_dim"), _const(num_head, "num_head")
    out = _attention(g, query, key, value, heads, embed, (qkv_weight, qkv_bias, proj_weight, proj_bias))
    return out, g.op("Constant", value_t=torch.zeros(0))


def _layer_norm(g: Any, x: Any, weight: Any, bias: Any, eps: float) -> Any:
    return g.op("LayerNormalization", x, weight, bias, axis_i=-1, epsilon_f=eps)


def _gelu(g: Any, x: Any) -> Any:
    root = g.op("Constant", value_t=torch.tensor(math.sqrt(2.0)))
    half, one = g.op("Constant", value_t=torch.tensor(0.5)), g.op("Constant", value_t=torch.tensor(1.0))
    return g.op("Mul", g.op("Mul", x, half), g.op("Add", g.op("Erf", g.op("Div", x, root)), one))


def _transformer_encoder_layer_fwd(g: Any, src: Any, embed_dim: Any, num_heads: Any, *rest: Any) -> Any:
    qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first, eps = rest[:7]
    norm1_w, norm1_b, norm2_w, norm2_b, ffn1_w, ffn1_b, ffn2_w, ffn2_b = rest[7:15]
    _no_mask(rest[15] if len(rest) > 15 else None, "aten::_transformer_encoder_layer_fwd")
    embed, heads = _const(embed_dim, "embed_dim"), _const(num_heads, "num_heads")
    gelu, pre_norm = (
        bool(_const(use_gelu, "use_gelu", "b")),
        bool(_const(norm_first, "norm_first", "b")),
    )
    epsilon = float(_const(eps, "eps", "f"))
    weights = (qkv_weight, qkv_bias, proj_weight, proj_bias)

    def feed_forward(x: Any) -> Any:
        hidden = _linear(g, x, ffn1_w, ffn1_b)
        return _linear(g, _gelu(g, hidden) if gelu else g.op("Relu", hidden), ffn2_w, ffn2_b)

    if pre_norm:
        normed = _layer_norm(g, src, norm1_w, norm1_b, epsilon)
        x = g.op("Add", src, _attention(g, normed, normed, normed, heads, embed, weights))
        return g.op("Add", x, feed_forward(_layer_norm(g, x, norm2_w, norm2_b, epsilon)))
    x = _layer_norm(
        g, g.op("Add", src, _attention(g, src, src, src, heads, embed, weights)), norm1_w, norm1_b, epsilon
    )
    return _layer_norm(g, g.op("Add", x, feed_forward(x)), norm2_w, norm2_b, epsilon)


def _diff(g: Any, x: Any, n: Any, dim: Any, prepend: Any, append: Any) -> Any:
    if _const(n, "n") != 1:
        raise torch.onnx.errors.SymbolicValueError("aten::diff with n != 1 is not supported", x)
    axis = _const(dim, "dim")
    parts = [p for p in (prepend, x, append) if not symbolic_helper._is_none(p)]
    whole = g.op("Concat", *parts, axis_i=axis) if len(parts) > 1 else x
    axes = _ints(g, [axis])
    later = g.op("Slice", whole, _ints(g, [1]), _ints(g, [2**63 - 1]), axes)
    earlier = g.op("Slice", whole, _ints(g, [0]), _ints(g, [-1]), axes)
    return g.op("Sub", later, earlier)


def _cumsum(g: Any, x: Any, dim: Any, dtype: Any) -> Any:
    axis = g.op("Constant", value_t=torch.tensor(_const(dim, "dim"), dtype=torch.int64))
    if not symbolic_helper._is_none(dtype):
        target = _type_utils.JitScalarType(_const(dtype, "dtype"))
        x = g.op("Cast", x, to_i=target.onnx_type())
    elif _type_utils.JitScalarType.from_value(x, _type_utils.JitScalarType.UNDEFINED) in _SUMMED_AS_INT64:
        x = g.op("Cast", x, to_i=_type_utils.JitScalarType.INT64.onnx_type())
    return g.op("CumSum", x, axis)


def register() -> None:
    """Register the symbolics with the legacy ONNX exporter (once per process)."""
    global _registered
    if _registered:
        return
    register_custom_op_symbolic("aten::_native_multi_head_attention", _native_multi_head_attention, _OPSET)
    register_custom_op_symbolic(
        "aten::_transformer_encoder_layer_fwd", _transformer_encoder_layer_fwd, _OPSET
    )
    register_custom_op_symbolic("aten::diff", _diff, _OPSET)
    register_custom_op_symbolic("aten::cumsum", _cumsum, _OPSET)
    _registered = True
