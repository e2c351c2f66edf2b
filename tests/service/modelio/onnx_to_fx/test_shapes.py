"""Shapes follow the data: grouping rules, and converted graphs that keep working after pruning.

The channel-change tests prune a converted GraphModule by hand (smaller Conv / Linear
/ BatchNorm) and the eager model it was exported from in exactly the same way, and
compare them: every Reshape, Flatten and channel shuffle downstream must adapt,
including the dynamo exporter's graphs where every size is a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from prunekit_server.modelio.onnx_to_fx import onnx_to_fx
from prunekit_server.modelio.onnx_to_fx.shapes import align

from .helpers import rel_error
from .zoo import ZOO


@pytest.mark.parametrize(
    ("source", "target", "groups"),
    [
        ([2, 8, 16], [2, 8, 2, 8], [([0], [0]), ([1], [1]), ([2], [2, 3])]),
        ([2, 2, 4, 3, 3], [2, 8, 3, 3], [([0], [0]), ([1, 2], [1]), ([3], [2]), ([4], [3])]),
        ([2, 16, 1, 1], [2, 16], [([0], [0]), ([1], [1]), ([2], []), ([3], [])]),
        ([1, 6], [6], [([0], []), ([1], [0])]),
        ([4, 6], [1, 4, 6], [([], [0]), ([0], [1]), ([1], [2])]),
        ([6, 4], [4, 6], [([0, 1], [0, 1])]),
    ],
)
def test_align(source: list[int], target: list[int], groups: list[tuple[list[int], list[int]]]) -> None:
    assert align(source, target) == groups


def test_align_gives_up_on_empty_or_mismatched_shapes() -> None:
    assert align([0, 3], [3, 0]) is None
    assert align([2, 3], [7]) is None


def _sliced(module: nn.Module, out_keep: Sequence[int] | None, in_keep: Sequence[int] | None) -> nn.Module:
    """A copy of a Conv2d / Linear / BatchNorm2d keeping some output and input channels."""
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm2d):
            assert out_keep is not None
            bn = nn.BatchNorm2d(len(out_keep), eps=module.eps).eval()
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(module, name)[list(out_keep)])
            return bn
        weight = module.weight
        if out_keep is not None:
            weight = weight[list(out_keep)]
        if in_keep is not None:
            weight = weight[:, list(in_keep)]
        bias = (
            module.bias[list(out_keep)] if module.bias is not None and out_keep is not None else module.bias
        )
        if isinstance(module, nn.Linear):
            new: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            assert isinstance(module, nn.Conv2d)
            groups = module.groups
            new = nn.Conv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                groups,
                bias=bias is not None,
            )
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
        return new.eval()


Surgery = dict[str, tuple[Sequence[int] | None, Sequence[int] | None]]


def _apply(model: nn.Module, surgery: Surgery) -> None:
    names = dict(model.named_modules())
    for name, (out_keep, in_keep) in surgery.items():
        if name not in names:
            continue  # e.g. a BatchNorm the dynamo exporter folded into its conv
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, _sliced(names[name], out_keep, in_keep))


MOBILE = {
    # concat [4 + 4] -> channel shuffle (groups 2) -> grouped conv (groups 4, 2 inputs per group)
    "branch_a": ([0, 2, 4, 6], None),
    "branch_b.0": ([1, 3, 5, 7], None),
    "branch_b.1": ([1, 3, 5, 7], None),
    "mix": ([0, 1, 4, 5, 8, 9, 12, 13], [0, 1]),
    # 8 channels x 2 x 2 after the pools -> Reshape(B, -1) -> Linear(32, 5)
    "head": (None, [c * 4 + k for c in (0, 1, 4, 5, 8, 9, 12, 13) for k in range(4)]),
}
TRANSFORMER = {
    # two heads of width 8 -> width 4: Reshape(B, T, 2, 8) must become (B, T, 2, 4)
    "attn.q": ([0, 1, 2, 3, 8, 9, 10, 11], None),
    "attn.k": ([1, 2, 3, 4, 9, 10, 11, 12], None),
    "attn.v": ([0, 2, 4, 6, 8, 10, 12, 14], None),
    "attn.o": (None, list(range(8))),
    "ff1": (list(range(0, 32, 2)), None),
    "ff2": (None, list(range(16))),
}
CASES = [
    ("mobile", "legacy", 17, MOBILE),
    ("mobile", "dynamo", 18, MOBILE),
    ("mobile", "legacy", 11, MOBILE),
    ("transformer", "legacy", 17, TRANSFORMER),
    ("transformer", "legacy", 11, TRANSFORMER),
]


@pytest.mark.parametrize(
    ("name", "exporter", "opset", "surgery"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES]
)
def test_converted_graph_follows_pruned_channels(
    exported: Callable[..., onnx.ModelProto], name: str, exporter: str, opset: int, surgery: Surgery
) -> None:
    entry = ZOO[name]
    gm = onnx_to_fx(exported(name, exporter, opset))
    reference = entry.build()
    _apply(gm, surgery)
    _apply(reference, surgery)
    shrunk = [n for n in surgery if n in dict(gm.named_modules())]
    assert shrunk, "nothing was pruned"
    (x,) = entry.sample(seed=5)
    with torch.no_grad():
        expected = reference(x)
        actual = gm(x)
    assert actual.shape == expected.shape
    assert rel_error(actual.numpy(), expected.numpy()) < 1e-4
    assert not np.allclose(expected.numpy(), entry.build()(x).detach().numpy(), atol=1e-4)
