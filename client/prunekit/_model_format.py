"""Which format a model file is in: from its content, else from its suffix.

A TorchScript archive is a zip holding ``<name>/data.pkl`` and ``<name>/code/...``;
an ONNX model is a serialized ``ModelProto``: every top-level field one that
``ModelProto`` declares, with its wire type, up to the last byte, a graph among
them. The scan skips over length-delimited fields, so it reads only the tags
however large the file. Content that is neither (or both) leaves it to the suffix.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from prunekit.v1 import model_pb2

__all__ = ["infer_format", "sniff_format"]

_SUFFIXES: dict[str, model_pb2.ModelFormat.ValueType] = {
    ".onnx": model_pb2.MODEL_FORMAT_ONNX,
    ".pt": model_pb2.MODEL_FORMAT_TORCHSCRIPT,
    ".pth": model_pb2.MODEL_FORMAT_TORCHSCRIPT,
    ".ts": model_pb2.MODEL_FORMAT_TORCHSCRIPT,
    ".jit": model_pb2.MODEL_FORMAT_TORCHSCRIPT,
    ".torchscript": model_pb2.MODEL_FORMAT_TORCHSCRIPT,
}
_VARINT, _LEN = 0, 2
_MODEL_FIELDS = {1: _VARINT, 2: _LEN, 3: _LEN, 4: _LEN, 5: _VARINT, 6: _LEN, 7: _LEN, 8: _LEN}
_MODEL_FIELDS |= {14: _LEN, 20: _LEN, 25: _LEN, 26: _LEN}
_GRAPH_FIELD = 7


def infer_format(path: Path) -> model_pb2.ModelFormat.ValueType:
    """The format :func:`sniff_format` reads in ``path``'s content; when that is ambiguous, its suffix
    (``.onnx`` ONNX; ``.pt``, ``.pth``, ``.ts``, ``.jit``, ``.torchscript`` TorchScript); else ValueError."""
    sniffed = sniff_format(path)
    if sniffed is not None:
        return sniffed
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(_SUFFIXES))
        raise ValueError(
            f"cannot tell the model format of {path.name!r} from its content or its suffix (known: {known}); "
            "pass format="
        ) from None


def sniff_format(path: Path) -> model_pb2.ModelFormat.ValueType | None:
    """TorchScript or ONNX as ``path``'s content says (see the module doc); None when it cannot tell."""
    try:
        with path.open("rb") as stream:
            if zipfile.is_zipfile(stream):
                return model_pb2.MODEL_FORMAT_TORCHSCRIPT if _torchscript_archive(stream) else None
            stream.seek(0)
            return model_pb2.MODEL_FORMAT_ONNX if _model_proto(stream) else None
    except OSError:
        return None


def _torchscript_archive(stream: BinaryIO) -> bool:
    try:
        with zipfile.ZipFile(stream) as archive:
            parts = [PurePosixPath(name).parts for name in archive.namelist()]
    except (zipfile.BadZipFile, ValueError):
        return False
    pickled = any(len(p) == 2 and p[1] == "data.pkl" for p in parts)
    return pickled and any(len(p) >= 3 and p[1] == "code" for p in parts)


def _varint(stream: BinaryIO) -> int | None:
    result = 0
    for shift in range(0, 64, 7):
        byte = stream.read(1)
        if not byte:
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
    return None


def _model_proto(stream: BinaryIO) -> bool:
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    seen_graph = False
    while stream.tell() < size:
        tag = _varint(stream)
        if tag is None or _MODEL_FIELDS.get(tag >> 3) != tag & 7:
            return False
        value = _varint(stream)
        if value is None:
            return False
        if tag & 7 == _LEN:
            if stream.tell() + value > size:
                return False
            stream.seek(value, io.SEEK_CUR)
        seen_graph = seen_graph or tag >> 3 == _GRAPH_FIELD
    return seen_graph
