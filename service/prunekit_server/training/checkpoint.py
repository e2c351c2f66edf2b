"""Training checkpoints in a directory: sha256 per file, a pointer written last.

Layout under the directory given to :class:`DirectoryCheckpoints`::

    ckpt-00000120/model.pt  optimizer.pt  trainer.pt  manifest.json
    latest.json      {"name": "ckpt-00000120", "step": 120, "files": {"model.pt": "<sha256>", ...}}

Every file is written to a temporary name and renamed into place; the
checkpoint's ``manifest.json`` (the sha256 of each file) is written after its
files and ``latest.json`` after the manifest, so a crash at any point leaves
either the new checkpoint complete or the pointer on the previous one.
:meth:`DirectoryCheckpoints.restore` tries the pointer's checkpoint first,
then every other checkpoint newest first, and returns the first whose files
all match their sha256: a corrupted or partial checkpoint is skipped.

Files are written with ``torch.save`` and read with
``torch.load(weights_only=True)`` only: a state is nested dicts, lists and
tuples of tensors and plain Python values (numpy RNG state is converted).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

POINTER = "latest.json"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^ckpt-(\d{8,})$")

TrainingState = dict[str, dict[str, Any]]
"""A checkpoint's content: part name (one file each, e.g. ``model``) -> that part's state."""


class CheckpointSink(Protocol):
    """Where the trainer saves its state and finds it again.

    The trainer asks :meth:`due` after each step and calls :meth:`save` when
    it answers True (and once at the end); before training it calls
    :meth:`restore` and resumes from the state it returns, if any.
    """

    def due(self, step: int, now: float) -> bool:
        """Whether a checkpoint should be written after ``step`` (``now`` from ``time.monotonic``)."""
        ...

    def save(self, step: int, state: TrainingState) -> None:
        """Durably store ``state`` as the checkpoint of ``step``."""
        ...

    def restore(self) -> TrainingState | None:
        """The newest valid checkpoint's state, or None when there is none."""
        ...


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DirectoryCheckpoints:
    """A :class:`CheckpointSink` on a local directory.

    Checkpoints are due every ``every_steps`` steps and/or every
    ``every_seconds`` seconds (0 disables either). The newest ``keep``
    checkpoints are kept (at least 2, so a fallback always exists).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        every_steps: int = 0,
        every_seconds: float = 0.0,
        keep: int = 2,
    ) -> None:
        if every_steps < 0 or every_seconds < 0:
            raise ValueError("checkpoint intervals must be >= 0")
        self.directory = Path(directory)
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self.keep = max(2, keep)
        self._last_time = time.monotonic()
        self.saved_steps: list[int] = []
        self.skipped: list[str] = []
        """Checkpoint names :meth:`restore` rejected, with the reason."""

    def due(self, step: int, now: float) -> bool:
        """True every ``every_steps`` steps or once ``every_seconds`` passed since the last save."""
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and now - self._last_time >= self.every_seconds

    def save(self, step: int, state: TrainingState) -> None:
        """Write ``state`` as ``ckpt-<step>``: files, then manifest, then the pointer; prune old ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{step:08d}"
        target = self.directory / name
        if target.exists():
            shutil.rmtree(target)
        staging = self.directory / f".{name}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        files: dict[str, str] = {}
        for part, value in state.items():
            path = staging / f"{part}.pt"
            torch.save(value, path)
            files[path.name] = _sha256(path)
        _write_atomic(staging / MANIFEST, json.dumps({"step": step, "files": files}).encode())
        os.replace(staging, target)
        pointer = {"name": name, "step": step, "files": files}
        _write_atomic(self.directory / POINTER, json.dumps(pointer, sort_keys=True).encode())
        self._last_time = time.monotonic()
        self.saved_steps.append(step)
        for old in self._candidates()[self.keep :]:
            shutil.rmtree(self.directory / old, ignore_errors=True)

    def restore(self) -> TrainingState | None:
        """The state of the newest checkpoint whose files all match their sha256, or None."""
        self.skipped = []
        order = self._candidates()
        try:
            pointer = json.loads((self.directory / POINTER).read_text())
            first = str(pointer["name"])
            if first in order:
                order.remove(first)
                order.insert(0, first)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        for name in order:
            state = self._load(name)
            if state is not None:
                return state
        return None

    def _candidates(self) -> list[str]:
        """Checkpoint directory names, newest step first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p.name) for p in self.directory.iterdir() if (m := _NAME.match(p.name))]
        return [name for _, name in sorted(found, reverse=True)]

    def _load(self, name: str) -> TrainingState | None:
        folder = self.directory / name
        try:
            files = json.loads((folder / MANIFEST).read_text())["files"]
            if not isinstance(files, dict) or not files:
                raise ValueError("empty manifest")
            state: TrainingState = {}
            for file, digest in files.items():
                if Path(str(file)).name != file or not str(file).endswith(".pt"):
                    raise ValueError(f"bad file name in manifest: {file!r}")
                path = folder / str(file)
                if _sha256(path) != digest:
                    self.skipped.append(f"{name}: sha256 mismatch for {file}")
                    return None
                state[Path(str(file)).stem] = torch.load(path, map_location="cpu", weights_only=True)
            return state
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as exc:
            self.skipped.append(f"{name}: {exc}")
            return None


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU, CUDA), numpy (global) and ``random``; loadable with weights_only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value
