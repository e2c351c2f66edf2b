"""Short names of enum values (``per_layer`` for ``PRUNE_SCOPE_PER_LAYER``) as spec files spell them."""

from __future__ import annotations

import re

from google.protobuf import descriptor as _d

from prunekit.v1 import spec_pb2

__all__ = ["ALIASES", "enum_prefix", "enum_short_name"]


def enum_prefix(enum: _d.EnumDescriptor) -> str:
    """The prefix every value name of ``enum`` shares: ``PRUNE_METHOD_`` for ``PruneMethod``."""
    from_name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", enum.name).upper() + "_"
    names = [v.name for v in enum.values]
    if all(n.startswith(from_name) and len(n) > len(from_name) for n in names):
        return from_name
    common = names[0]
    for name in names[1:]:
        while not name.startswith(common):
            common = common[:-1]
    cut = common.rfind("_")
    prefix = common[: cut + 1] if cut >= 0 else ""
    return prefix if all(len(n) > len(prefix) for n in names) else ""


def enum_short_name(enum: _d.EnumDescriptor, number: int) -> str:
    """The lower-case short name of a value (``per_layer``); the number as text when it has no name."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name[len(enum_prefix(enum)) :].lower()


ALIASES: dict[str, dict[str, int]] = {
    "prunekit.v1.FinetuneSpec.device": {"auto": spec_pb2.DEVICE_UNSPECIFIED},
}
"""Extra short names of enum values, per field: ``finetune.device: auto`` (CUDA when the worker has it)."""
