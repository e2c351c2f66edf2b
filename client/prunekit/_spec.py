"""Spec files (YAML or JSON) to ``OptimizationSpec`` and back, by walking the message descriptors.

Keys are the proto field names. Enum values are accepted by their short name in any case (``unstructured``,
``Per_Layer``, ``float32``) or by their full name (``PRUNE_METHOD_UNSTRUCTURED``), at any depth. Nothing is
coerced: numbers must be numbers, strings strings. Every problem is collected before :class:`SpecError` is
raised. :func:`load_checked_spec` also runs every rule the server runs (:mod:`prunekit.spec`), so the CLI
refuses a bad spec before it uploads anything.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, cast

import yaml
from google.protobuf import descriptor as _d
from google.protobuf.message import Message

from prunekit._errors import SpecError
from prunekit.spec.check import spec_violations
from prunekit.spec.limits import SpecLimits
from prunekit.spec.names import ALIASES, enum_prefix, enum_short_name
from prunekit.v1 import spec_pb2

__all__ = ["enum_short_name", "load_checked_spec", "load_spec", "spec_from_dict", "spec_to_dict"]

Problems = list[tuple[str, str]]

_CLIENT_LIMITS = SpecLimits(max_data_shards=sys.maxsize)
"""The data-shard cap is the server's to apply (it is configurable there); so are the others."""

_INT_RANGES = {
    _d.FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    _d.FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    _d.FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    _d.FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _enum_value(field: _d.FieldDescriptor, raw: object, path: str, problems: Problems) -> int | None:
    enum = _enum_type(field)
    aliases = ALIASES.get(field.full_name, {})
    choices = [v.name[len(enum_prefix(enum)) :].lower() for v in enum.values if v.number != 0]
    choices += list(aliases)
    if not isinstance(raw, str):
        problems.append((path, f"expected one of {', '.join(choices)}; got {_kind(raw)}"))
        return None
    if raw.strip().lower() in aliases:
        return aliases[raw.strip().lower()]
    wanted = raw.strip().upper().replace("-", "_")
    prefix = enum_prefix(enum)
    for value in enum.values:
        if wanted in (value.name, value.name[len(prefix) :]):
            return int(value.number)
    hint = _suggest(raw.lower(), choices)
    problems.append((path, f"unknown value {raw!r}{hint}; expected one of {', '.join(choices)}"))
    return None


def _suggest(word: str, options: list[str]) -> str:
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _enum_type(field: _d.FieldDescriptor) -> _d.EnumDescriptor:
    assert field.enum_type is not None
    return field.enum_type


def _entry_type(field: _d.FieldDescriptor) -> _d.Descriptor:
    assert field.message_type is not None
    return field.message_type


def _scalar(field: _d.FieldDescriptor, raw: object, path: str, problems: Problems) -> object | None:
    """The Python value for a non-message field, or None after recording a problem."""
    cpp = field.cpp_type
    if cpp == _d.FieldDescriptor.CPPTYPE_ENUM:
        return _enum_value(field, raw, path, problems)
    if cpp in _INT_RANGES:
        if isinstance(raw, bool) or not isinstance(raw, int):
            problems.append((path, f"expected an integer; got {_kind(raw)}"))
            return None
        low, high = _INT_RANGES[cpp]
        if not low <= raw <= high:
            problems.append((path, f"{raw} is out of range [{low}, {high}]"))
            return None
        return raw
    if cpp in (_d.FieldDescriptor.CPPTYPE_DOUBLE, _d.FieldDescriptor.CPPTYPE_FLOAT):
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            problems.append((path, f"expected a number; got {_kind(raw)}"))
            return None
        return float(raw)
    if cpp == _d.FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(raw, bool):
            problems.append((path, f"expected true or false; got {_kind(raw)}"))
            return None
        return raw
    if field.type == _d.FieldDescriptor.TYPE_BYTES:
        if isinstance(raw, bytes):
            return raw
        if isinstance(raw, str):
            return raw.encode()
        problems.append((path, f"expected a string; got {_kind(raw)}"))
        return None
    if not isinstance(raw, str):
        problems.append((path, f"expected a string; got {_kind(raw)}"))
        return None
    return raw


def _fill(message: Message, data: object, path: str, problems: Problems) -> None:
    descriptor = message.DESCRIPTOR
    if data is None:
        return
    if not isinstance(data, Mapping):
        problems.append((path or "(spec)", f"expected a mapping; got {_kind(data)}"))
        return
    names = [f.name for f in descriptor.fields]
    for key, raw in data.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str):
            problems.append((where, "keys must be strings"))
            continue
        field = cast("_d.FieldDescriptor | None", descriptor.fields_by_name.get(key))
        if field is None:
            problems.append((where, f"unknown field{_suggest(key, names)}"))
            continue
        _fill_field(message, field, raw, where, problems)


def _is_map(field: _d.FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _fill_field(
    message: Message, field: _d.FieldDescriptor, raw: object, path: str, problems: Problems
) -> None:
    is_message = field.cpp_type == _d.FieldDescriptor.CPPTYPE_MESSAGE
    if _is_map(field):
        if not isinstance(raw, Mapping):
            problems.append((path, f"expected a mapping; got {_kind(raw)}"))
            return
        key_field = _entry_type(field).fields_by_name["key"]
        value_field = _entry_type(field).fields_by_name["value"]
        target = getattr(message, field.name)
        for k, v in raw.items():
            key = _scalar(key_field, k, f"{path}.{k}", problems)
            if key is None:
                continue
            if value_field.cpp_type == _d.FieldDescriptor.CPPTYPE_MESSAGE:
                _fill(target[key], v, f"{path}.{k}", problems)
            else:
                value = _scalar(value_field, v, f"{path}.{k}", problems)
                if value is not None:
                    target[key] = value
        return
    if field.is_repeated:
        if not isinstance(raw, list | tuple):
            problems.append((path, f"expected a list; got {_kind(raw)}"))
            return
        container = getattr(message, field.name)
        for index, item in enumerate(raw):
            where = f"{path}[{index}]"
            if is_message:
                _fill(container.add(), item, where, problems)
                if item is None:
                    problems.append((where, "expected a mapping; got null"))
            else:
                value = _scalar(field, item, where, problems)
                if value is not None:
                    container.append(value)
        return
    if is_message:
        child = getattr(message, field.name)
        child.SetInParent()
        _fill(child, raw, path, problems)
        return
    value = _scalar(field, raw, path, problems)
    if value is not None:
        setattr(message, field.name, value)


def spec_from_dict(data: Mapping[str, Any] | None) -> spec_pb2.OptimizationSpec:
    """Converts a spec-file mapping to an ``OptimizationSpec``.

    ``None`` (an empty file) gives an empty spec. A message field given as ``null`` is set, empty (so
    ``finetune:`` reaches the server, which decides). Raises :class:`SpecError` listing every unknown key,
    wrong type and unknown enum name with its field path (``inputs[0].dtype``).
    """
    spec, problems = _build(data)
    if problems:
        raise SpecError(problems)
    return spec


def _build(data: object) -> tuple[spec_pb2.OptimizationSpec, Problems]:
    """The spec ``data`` describes, with what could be read, and every problem reading it."""
    spec = spec_pb2.OptimizationSpec()
    problems: Problems = []
    _fill(spec, data, "", problems)
    return spec, problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


MAX_DEPTH = 32
"""The deepest nesting a spec file may have (a real spec needs 4 levels)."""


def _parse(text: str, suffix: str, source: str) -> object:
    as_json = suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith(("{", "[")))
    try:
        data = _parse_json(text, source) if as_json else _parse_yaml(text, source)
    except RecursionError:
        data = None
        deep = True
    else:
        deep = _deeper_than(data, MAX_DEPTH)
    if deep:
        problem = f"nested more than {MAX_DEPTH} levels deep; a spec needs a few"
        raise SpecError([("(file)", problem)], source=source)
    return data


def _parse_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([(f"line {exc.lineno}", f"invalid JSON: {exc.msg}")], source=source) from exc


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([(where, f"invalid YAML: {problem}")], source=source) from exc


def _deeper_than(data: object, limit: int) -> bool:
    """Whether ``data`` nests mappings and lists more than ``limit`` levels.

    Walked level by level without recursion, each object once (YAML aliases share objects).
    """
    seen: set[int] = set()
    level: list[object] = [data]
    for _ in range(limit + 1):
        level = [child for item in level for child in _children(item) if id(child) not in seen]
        seen.update(id(child) for child in level)
        if not level:
            return False
    return True


def _children(item: object) -> list[object]:
    if isinstance(item, Mapping):
        return [v for v in item.values() if isinstance(v, Mapping | list)]
    if isinstance(item, list):
        return [v for v in item if isinstance(v, Mapping | list)]
    return []


def _read(file: Path) -> tuple[spec_pb2.OptimizationSpec, Problems]:
    text = file.read_text(encoding="utf-8")
    data = _parse(text, file.suffix.lower(), str(file))
    if data is not None and not isinstance(data, Mapping):
        raise SpecError(
            [("(spec)", f"expected a mapping at the top level; got {_kind(data)}")], source=str(file)
        )
    return _build(data)


def load_spec(path: str | PathLike[str]) -> spec_pb2.OptimizationSpec:
    """Reads a spec file: YAML for ``.yaml``/``.yml``, JSON for ``.json``, otherwise JSON when the text starts
    with ``{`` and YAML else.

    Raises ``OSError`` when the file cannot be read and :class:`SpecError` (with ``source`` set to the path)
    for bad syntax or content.
    """
    spec, problems = _read(Path(path))
    if problems:
        raise SpecError(problems, source=str(path))
    return spec


def _file_path(field: str) -> str:
    """A rule's field path (``spec.prune.ratio``) as the spec file spells it (``prune.ratio``)."""
    return "(spec)" if field == "spec" else field.removeprefix("spec.")


def _related(a: str, b: str) -> bool:
    """Whether one path is the other or lies inside it (``prune`` and ``prune.method``)."""
    short, long = sorted((a, b), key=len)
    return long == short or long.startswith((f"{short}.", f"{short}["))


def load_checked_spec(
    path: str | PathLike[str],
    model_format: int,
    *,
    train: Sequence[str] = (),
    eval: Sequence[str] = (),
) -> spec_pb2.OptimizationSpec:
    """Reads a spec file (as :func:`load_spec`) and checks it against every rule the server applies.

    ``model_format`` is the ``ModelFormat`` of the model the spec will run on; ``train`` and ``eval`` name
    local shards that will be uploaded and added to ``data`` (checked as if they were). Raises
    :class:`SpecError` listing every problem once: what could not be read, then every rule broken, leaving
    out a rule's complaint about a field that could not be read anyway. The data-shard cap is the server's
    to apply (it is configurable there).
    """
    spec, problems = _read(Path(path))
    probe = spec_pb2.OptimizationSpec()
    probe.CopyFrom(spec)
    probe.data.train.extend(f"upload://{shard}" for shard in train)
    probe.data.eval.extend(f"upload://{shard}" for shard in eval)
    if not probe.data.train and not probe.data.eval and not spec.HasField("data"):
        probe.ClearField("data")
    for violation in spec_violations(probe, model_format, limits=_CLIENT_LIMITS):
        where = _file_path(violation.field)
        if not any(_related(where, seen) for seen, _ in problems):
            problems.append((where, violation.description))
    if problems:
        raise SpecError(problems, source=str(path))
    return spec


def _plain(field: _d.FieldDescriptor, value: Any) -> Any:
    if field.cpp_type == _d.FieldDescriptor.CPPTYPE_MESSAGE:
        return message_to_dict(value)
    if field.cpp_type == _d.FieldDescriptor.CPPTYPE_ENUM:
        return enum_short_name(_enum_type(field), value)
    return value


def message_to_dict(message: Message) -> dict[str, Any]:
    """The fields set in ``message`` as plain Python values, enums by lower-case short name."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if _is_map(field):
            value_field = _entry_type(field).fields_by_name["value"]
            out[field.name] = {k: _plain(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_plain(field, v) for v in value]
        else:
            out[field.name] = _plain(field, value)
    return out


def spec_to_dict(spec: spec_pb2.OptimizationSpec) -> dict[str, Any]:
    """The spec in spec-file shape (short enum names), for display; ``spec_from_dict`` reads it back."""
    return message_to_dict(spec)
