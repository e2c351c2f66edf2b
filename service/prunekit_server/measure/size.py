"""Model sizes: serialized bytes and gzip-compressed bytes.

The compressed size is what storing or transferring a sparse model costs:
zeroed weights do not shrink the ONNX file but compress well. gzip level 6
with a zero timestamp and no file name, so the number is reproducible.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import onnx

GZIP_LEVEL = 6
_CHUNK = 1 << 20


def serialized_size(model: onnx.ModelProto) -> int:
    """Bytes of ``model`` serialized as protobuf (the size of its ``.onnx`` file)."""
    return int(model.ByteSize())


def compressed_size(data: bytes | Path) -> int:
    """Bytes of ``data`` (or of the file at that path, read in 1 MiB chunks) after gzip level 6."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    total = 0
    if isinstance(data, Path):
        with data.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                total += len(compressor.compress(chunk))
    else:
        total += len(compressor.compress(data))
    return total + len(compressor.flush())
