"""What an ONNX value is while the graph is being built.

:class:`Value` is a tensor (or, for shape arithmetic, a Python number): either a
node of the torch.fx graph, or a constant known at conversion time (an
initializer, a ``Constant`` node, or anything computed only from those). Every
value also carries ``example``: its value on the sample inputs the converter runs
alongside the build, which tells converters static facts such as ranks, sizes and
dtypes.

:class:`Dims` is a small integer (or float) tensor built from shapes, kept item by
item: ``Shape(x)`` becomes ``[x.size(0), x.size(1), ...]`` and Gather, Slice,
Concat, Unsqueeze and arithmetic on it stay item-wise. A Reshape or Expand fed by
it then reads the sizes of the data at run time instead of numbers frozen at export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx


@dataclass(eq=False)
class Value:
    """A tensor or number: a graph node (``node``) or a constant (``node is None``)."""

    node: fx.Node | None
    example: Any
    origin: str | None = None
    """The initializer a constant was read from (kept through Identity/Transpose)."""

    @property
    def is_const(self) -> bool:
        return self.node is None

    @property
    def tensor(self) -> torch.Tensor:
        """The example (or constant) as a tensor; fails for non-tensor values."""
        if not isinstance(self.example, torch.Tensor):
            raise TypeError(f"expected a tensor, got {type(self.example).__name__}")
        return self.example

    @property
    def rank(self) -> int:
        return self.tensor.dim()

    @property
    def shape(self) -> list[int]:
        return list(self.tensor.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.tensor.dtype


def const(example: Any, origin: str | None = None) -> Value:
    """A constant value."""
    return Value(None, example, origin)


@dataclass(eq=False)
class Dims:
    """A 0-D or 1-D shape-like tensor held as one :class:`Value` (a number) per item."""

    items: list[Value]
    scalar: bool = False
    dtype: torch.dtype = torch.int64
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_const(self) -> bool:
        return all(item.is_const for item in self.items)

    @property
    def examples(self) -> list[Any]:
        return [item.example for item in self.items]

    def example_tensor(self) -> torch.Tensor:
        data = self.examples
        return torch.tensor(data[0] if self.scalar else data, dtype=self.dtype)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> Dims:
        """Constant items of a 0-D or 1-D tensor."""
        if tensor.dim() > 1:
            raise ValueError("only 0-D and 1-D tensors are shape-like")
        numbers = tensor.reshape(-1).tolist()
        return cls([const(n) for n in numbers], tensor.dim() == 0, tensor.dtype)
