"""What every technique's config shares, whatever the technique family, and the registry of techniques.

A config is a frozen dataclass whose class names its technique under a family key (``method`` for pruning,
``mode`` for quantization), whose fields describe themselves (``metadata["description"]``) and which
round-trips through JSON: ``{"<key>": <name>, <field>: <value>, ...}`` with tuples as lists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from .values import patterns_problems

__all__ = ["Registry", "check_patterns", "config_from_dict", "config_to_dict", "describe_fields"]

C = TypeVar("C")
K = TypeVar("K")
V = TypeVar("V")


class Registry(Generic[K, V]):
    """A key -> value table techniques add themselves to (name -> config type, config type -> handler).

    Nothing in it knows which techniques exist: each adds its own entry when its module is imported.
    """

    def __init__(self) -> None:
        self._entries: dict[K, V] = {}

    def add(self, key: K, value: V) -> V:
        """Register ``value`` under ``key`` (replacing an earlier entry) and return it."""
        self._entries[key] = value
        return value

    def get(self, key: K) -> V | None:
        """The entry for ``key``, or None."""
        return self._entries.get(key)

    def as_dict(self) -> dict[K, V]:
        """A copy of every entry, in registration order."""
        return dict(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def config_to_dict(config: Any, key: str) -> dict[str, Any]:
    """JSON-ready form of ``config``: its technique name under ``key``, then every field."""
    out: dict[str, Any] = {key: getattr(config, key)}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(
    cls: type[C],
    family: type[C],
    registry: Mapping[str, type[C]],
    key: str,
    label: str,
    data: Mapping[str, Any],
) -> C:
    """Inverse of :func:`config_to_dict`.

    Called on the ``family`` base class, ``data[key]`` picks the config type from ``registry``; called on a
    concrete class, ``data[key]`` (if given) must name it. Raises ``ValueError`` for an unknown technique,
    unknown keys or invalid values (``label`` names the technique kind in messages).
    """
    items = dict(data)
    name = items.pop(key, getattr(cls, key) or None)
    target = registry.get(str(name)) if cls is family else cls
    if target is None:
        raise ValueError(f"unknown {label} {name!r}; known: {sorted(registry)}")
    if name != getattr(target, key):
        raise ValueError(f"{key} {name!r} does not match {target.__name__} ({getattr(target, key)!r})")
    known = {f.name for f in dataclasses.fields(target)}  # type: ignore[arg-type]
    unknown = sorted(set(items) - known)
    if unknown:
        raise ValueError(f"unknown {getattr(target, key)} option(s): {', '.join(unknown)}")
    for field_name, value in items.items():
        if isinstance(value, list):
            items[field_name] = tuple(value)
    return target(**items)


def describe_fields(cls: type[Any]) -> dict[str, str]:
    """Field name -> human description, from each field's metadata."""
    return {f.name: str(f.metadata.get("description", "")) for f in dataclasses.fields(cls)}


def check_patterns(patterns: object, name: str) -> tuple[str, ...]:
    """``patterns`` (the field ``name``) as a tuple of globs; ``ValueError`` unless each is a valid glob."""
    if isinstance(patterns, str):
        raise ValueError(f"{name} must be a sequence of glob patterns, not one string")
    items = tuple(patterns) if isinstance(patterns, Sequence) else ()
    for index, problem in patterns_problems(items):
        raise ValueError(f"{name}: {problem}" if index is None else f"{name} patterns must each be {problem}")
    return items
