"""The pre-scan of a TorchScript archive: a zip's directory read without inflating anything.

Torch-free, so the server runs it on an upload before storing it (a deflate bomb is refused there), and
the worker runs it again before ``torch.jit.load`` sees the file.
"""

from __future__ import annotations

import itertools
import struct
import zipfile
from pathlib import Path, PurePosixPath

from .errors import invalid_model
from .model_caps import ModelCaps

__all__ = ["prescan_torchscript_archive"]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prescan_torchscript_archive(
    path: Path, *, max_entries: int = 10_000, caps: ModelCaps | None = None, display_name: str = ""
) -> None:
    """Reject ``path`` (INVALID_MODEL) unless it is a plain, bounded zip archive.

    Checked: it is a zip; at most ``max_entries`` entries; their declared
    uncompressed sizes sum to at most ``caps.max_tensor_bytes`` (else MODEL_TOO_LARGE,
    before anything is inflated); no absolute, drive or ``..`` entry names; no
    duplicate names; every entry's local header is where the central directory says
    and no two entries' data overlap or leave the file. Errors name the archive ``display_name``
    (default: the file's name).
    """
    caps = caps or ModelCaps()
    name = display_name or path.name
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise invalid_model(
            f"{name} is not a TorchScript archive (not a readable zip file): {_one_line(exc)}"
        ) from exc
    if not infos:
        raise invalid_model(f"{name} is not a TorchScript archive: the zip file is empty")
    if len(infos) > max_entries:
        raise invalid_model(f"{name} has {len(infos)} archive entries; at most {max_entries} are allowed")
    total = sum(info.file_size for info in infos)
    if total > caps.max_tensor_bytes:
        raise caps.too_large("max_tensor_bytes", f"{name} would unpack to {total} bytes")
    seen: set[str] = set()
    for info in infos:
        entry = info.filename
        parts = PurePosixPath(entry.replace("\\", "/")).parts
        if (
            entry.startswith(("/", "\\"))
            or (len(entry) > 1 and entry[1] == ":")
            or ".." in parts
            or "\0" in entry
        ):
            raise invalid_model(f"{name} has an unsafe archive entry name {entry[:200]!r}")
        if entry in seen:
            raise invalid_model(f"{name} has a duplicate archive entry {entry[:200]!r}")
        seen.add(entry)
    spans: list[tuple[int, int, str]] = []
    with path.open("rb") as handle:
        for info in infos:
            handle.seek(info.header_offset)
            header = handle.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
                raise invalid_model(f"{name} has a corrupt archive entry {info.filename[:200]!r}")
            name_len, extra_len = _LOCAL_HEADER.unpack(header)[9:11]
            start = info.header_offset
            end = start + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
            if end > size:
                raise invalid_model(
                    f"{name}: archive entry {info.filename[:200]!r} extends past the end of the file"
                )
            spans.append((start, end, info.filename))
    spans.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise invalid_model(f"{name}: archive entries {first[:100]!r} and {second[:100]!r} overlap")
