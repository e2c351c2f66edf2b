"""A job's training checkpoints between the worker's directory and storage.

The worker's :class:`~prunekit_server.training.checkpoint.DirectoryCheckpoints`
writes ``<local>/<phase>/<name>/{*.pt, manifest.json}`` and then
``<local>/<phase>/latest.json``. In storage the same layout lives under the
job's checkpoint prefix::

    <prefix><phase>/<name>/<file>      each file verified against the local manifest's sha256
    <prefix><phase>/<name>/manifest.json
    <prefix><phase>/latest.json        {"name", "step", "files"}, written LAST

so a pointer in storage always names a complete checkpoint. Uploads run on a
thread of their own (:class:`CheckpointUploader`): the progress reader only
queues the event, so a slow store never stalls the worker's progress pipe.
:func:`restore` copies every phase's pointed checkpoint (or, when that one is
unusable, the newest usable older one) back into a fresh local directory
before an attempt.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ...hashing import sha256_file
from ...storage import ChecksumMismatch, ObjectNotFound, ObjectStore, StorageError, StorageUnavailable
from .storage_errors import OUTAGES

log = logging.getLogger(__name__)

POINTER = "latest.json"
MANIFEST = "manifest.json"
_PHASE = re.compile(r"^(finetune|round-\d{1,4})$")
_NAME = re.compile(r"^ckpt-\d{8,12}$")
_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}\.pt$")
_KEEP = 2


def valid_phase(phase: str) -> bool:
    return bool(_PHASE.match(phase))


def upload_checkpoint(store: ObjectStore, prefix: str, local: Path, phase: str, name: str) -> int | None:
    """Upload ``local/<phase>/<name>`` and then point ``<phase>/latest.json`` at it.

    Returns the checkpoint's step, or None (nothing written) when it is not a
    complete local checkpoint any more: missing, partial, or a file whose
    sha256 differs from its manifest (the worker deleted or rewrote it; a
    newer one follows). Raises StorageError when storage fails.
    """
    if not (valid_phase(phase) and _NAME.match(name)):
        return None
    folder = local / phase / name
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = {str(k): str(v) for k, v in dict(manifest["files"]).items()}
        step = int(manifest["step"])
        if not files or not all(_FILE.match(f) for f in files):
            return None
        base = f"{prefix}{phase}/{name}/"
        for file, digest in sorted(files.items()):
            if sha256_file(folder / file) != digest:
                return None
            store.put_file(base + file, folder / file, sha256=digest)
        store.put_bytes(base + MANIFEST, json.dumps({"step": step, "files": files}).encode())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    pointer = {"name": name, "step": step, "files": files}
    store.put_bytes(f"{prefix}{phase}/{POINTER}", json.dumps(pointer, sort_keys=True).encode())
    _prune(store, prefix, phase)
    return step


def _prune(store: ObjectStore, prefix: str, phase: str) -> None:
    """Keep the newest ``_KEEP`` checkpoints of a phase in storage."""
    names = sorted({k[len(prefix) :].split("/")[1] for k in store.list_keys(f"{prefix}{phase}/ckpt-")})
    for old in names[:-_KEEP]:
        for key in store.list_keys(f"{prefix}{phase}/{old}/"):
            store.delete(key)


def newest_local(local: Path) -> dict[str, str]:
    """Each phase's checkpoint that the local pointer names: ``{phase: name}``."""
    found: dict[str, str] = {}
    if not local.is_dir():
        return found
    for folder in local.iterdir():
        try:
            name = str(json.loads((folder / POINTER).read_text())["name"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if valid_phase(folder.name):
            found[folder.name] = name
    return found


def restore(store: ObjectStore, prefix: str, local: Path) -> dict[str, int]:
    """Copy each phase's newest usable checkpoint from storage into ``local/<phase>/``.

    The pointed checkpoint first, then (when the pointer or one of its files is missing,
    corrupt or fails its sha256) the phase's other stored checkpoints, newest first, as
    their own manifests describe them. Files first, then the manifest, then the local
    pointer. Returns ``{phase: step}`` of what was restored; a phase with no usable
    checkpoint is left out. Raises StorageError only when storage is unavailable.
    """
    names: dict[str, set[str]] = {}
    for key in store.list_keys(prefix):
        phase, _, rest = key[len(prefix) :].partition("/")
        if valid_phase(phase):
            name = rest.split("/", 1)[0]
            names.setdefault(phase, set()).update({name} if _NAME.match(name) else set())
    restored: dict[str, int] = {}
    for phase, stored in sorted(names.items()):
        for name, step, files in _candidates(store, prefix, phase, stored):
            folder = local / phase / name
            try:
                if not _NAME.match(name) or not files or not all(_FILE.match(f) for f in files):
                    raise ValueError(f"{phase}/{name}: bad manifest")
                folder.mkdir(parents=True, exist_ok=True)
                for file, digest in files.items():
                    store.get_file(f"{prefix}{phase}/{name}/{file}", folder / file)
                    if sha256_file(folder / file) != digest:
                        raise ValueError(f"{phase}/{name}/{file}: sha256 mismatch")
            except _UNUSABLE as exc:
                log.warning("checkpoint %s%s/%s not restored: %s", prefix, phase, name, exc)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            (folder / MANIFEST).write_text(json.dumps({"step": step, "files": files}))
            pointer = {"name": name, "step": step, "files": files}
            (local / phase / POINTER).write_text(json.dumps(pointer, sort_keys=True))
            restored[phase] = step
            break
    return restored


_UNUSABLE = (ObjectNotFound, ChecksumMismatch, ValueError, KeyError, TypeError)
"""What makes one stored checkpoint unusable (the next one is tried); other storage errors raise."""


def _candidates(
    store: ObjectStore, prefix: str, phase: str, names: set[str]
) -> Iterator[tuple[str, int, dict[str, str]]]:
    """``(name, step, files)`` of a phase's stored checkpoints: the pointed one, then the
    others newest first (read lazily, from their manifests); unreadable ones are skipped."""
    first = ""
    try:
        pointer = json.loads(store.get_bytes(f"{prefix}{phase}/{POINTER}"))
        first = str(pointer["name"])
        yield first, int(pointer["step"]), {str(k): str(v) for k, v in dict(pointer["files"]).items()}
    except _UNUSABLE as exc:
        log.warning("checkpoint pointer %s%s/%s unusable: %s", prefix, phase, POINTER, exc)
    for name in sorted(names - {first}, reverse=True):
        try:
            manifest = json.loads(store.get_bytes(f"{prefix}{phase}/{name}/{MANIFEST}"))
            yield name, int(manifest["step"]), {str(k): str(v) for k, v in dict(manifest["files"]).items()}
        except _UNUSABLE as exc:
            log.warning("checkpoint %s%s/%s unusable: %s", prefix, phase, name, exc)


class CheckpointUploader:
    """Uploads a running job's checkpoints off the progress reader's thread.

    :meth:`report` queues a checkpoint the worker announced and returns at
    once; only the newest announcement per phase is uploaded when several are
    waiting. ``on_uploaded(phase, step)`` is called after each pointer write.
    :meth:`finish` (after the worker exited) drains the queue, then uploads
    each phase's newest complete local checkpoint once more. ``may_write()``
    is asked before each upload: a server whose lease is stale (frozen, or
    taken over) must not move the pointer under the job's new owner.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        local: Path,
        on_uploaded: Callable[[str, int], None],
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._local = local
        self._on_uploaded = on_uploaded
        self._may_write = may_write
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._uploaded: dict[str, str] = {}
        self._thread = threading.Thread(target=self._loop, name="checkpoint-upload", daemon=True)
        self._thread.start()

    @property
    def uploaded(self) -> dict[str, str]:
        """``{phase: name}`` of the checkpoints this uploader put in storage."""
        return dict(self._uploaded)

    def report(self, phase: str, name: str) -> None:
        self._queue.put((phase, name))

    def finish(self, timeout: float = 300.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        for phase, name in sorted(newest_local(self._local).items()):
            if self._uploaded.get(phase, "") < name:
                self._upload(phase, name)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pending = [item]
            while not self._queue.empty():
                more = self._queue.get()
                if more is None:
                    self._queue.put(None)
                    break
                pending.append(more)
            newest: dict[str, str] = {}
            for phase, name in pending:
                newest[phase] = max(name, newest.get(phase, ""))
            for phase, name in sorted(newest.items()):
                self._upload(phase, name)

    def _upload(self, phase: str, name: str) -> None:
        if self._uploaded.get(phase, "") >= name:
            return
        if not self._may_write():
            log.warning(
                "checkpoint %s/%s not uploaded: this server no longer holds a fresh lease", phase, name
            )
            return
        try:
            step = upload_checkpoint(self._store, self._prefix, self._local, phase, name)
        except StorageUnavailable as exc:
            OUTAGES.failed(exc)
            log.debug("checkpoint %s/%s not uploaded: %s", phase, name, exc)
            return
        except StorageError as exc:
            log.warning("checkpoint %s/%s not uploaded: %s", phase, name, exc)
            return
        OUTAGES.answered()
        if step is None:
            return
        self._uploaded[phase] = name
        try:
            self._on_uploaded(phase, step)
        except Exception:
            log.exception("checkpoint %s/%s: progress update failed", phase, name)
