"""Checkpoints between a worker's directory and storage: upload (pointer last), skip, prune, restore."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from prunekit_server.jobs.durable import checkpoint_sync
from prunekit_server.storage import FileStore, ObjectStore
from prunekit_server.training.checkpoint import DirectoryCheckpoints

PREFIX = "tenants/default/jobs/job-0123456789abcdef0123/checkpoints/"


def _save(local: Path, phase: str, step: int) -> str:
    sink = DirectoryCheckpoints(local / phase, keep=2)
    sink.save(step, {"model": {"w": torch.full((4,), float(step))}, "trainer": {"step": step}})
    return f"ckpt-{step:08d}"


def test_upload_writes_every_file_then_the_pointer(object_store: ObjectStore, tmp_path: Path) -> None:
    local = tmp_path / "checkpoints"
    name = _save(local, "finetune", 40)
    assert checkpoint_sync.upload_checkpoint(object_store, PREFIX, local, "finetune", name) == 40
    keys = object_store.list_keys(PREFIX)
    assert keys == sorted(
        PREFIX + f"finetune/{leaf}"
        for leaf in (f"{name}/manifest.json", f"{name}/model.pt", f"{name}/trainer.pt", "latest.json")
    )
    pointer = json.loads(object_store.get_bytes(PREFIX + "finetune/latest.json"))
    assert pointer["name"] == name
    assert pointer["step"] == 40
    assert set(pointer["files"]) == {"model.pt", "trainer.pt"}


def test_a_deleted_or_rewritten_checkpoint_is_skipped(object_store: ObjectStore, tmp_path: Path) -> None:
    local = tmp_path / "checkpoints"
    name = _save(local, "finetune", 10)
    (local / "finetune" / name / "model.pt").write_bytes(b"half-written")
    assert checkpoint_sync.upload_checkpoint(object_store, PREFIX, local, "finetune", name) is None
    shutil.rmtree(local / "finetune" / name)
    assert checkpoint_sync.upload_checkpoint(object_store, PREFIX, local, "finetune", name) is None
    assert checkpoint_sync.upload_checkpoint(object_store, PREFIX, local, "../x", name) is None
    assert object_store.list_keys(PREFIX) == []


def test_storage_keeps_the_newest_two_and_restore_resumes_them(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    local = tmp_path / "worker-1" / "checkpoints"
    for step in (10, 20, 30):
        checkpoint_sync.upload_checkpoint(
            object_store, PREFIX, local, "round-01", _save(local, "round-01", step)
        )
    checkpoint_sync.upload_checkpoint(object_store, PREFIX, local, "finetune", _save(local, "finetune", 5))
    names = {k.split("/")[-2] for k in object_store.list_keys(PREFIX + "round-01/ckpt-")}
    assert names == {"ckpt-00000020", "ckpt-00000030"}

    fresh = tmp_path / "worker-2" / "checkpoints"
    assert checkpoint_sync.restore(object_store, PREFIX, fresh) == {"round-01": 30, "finetune": 5}
    state = DirectoryCheckpoints(fresh / "round-01").restore()
    assert state is not None
    assert state["trainer"]["step"] == 30
    assert torch.equal(state["model"]["w"], torch.full((4,), 30.0))
    assert checkpoint_sync.restore(object_store, PREFIX, tmp_path / "worker-3" / "c") == {
        "round-01": 30,
        "finetune": 5,
    }


def test_restore_leaves_out_a_checkpoint_corrupted_in_storage(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    local = tmp_path / "checkpoints"
    name = _save(local, "finetune", 7)
    checkpoint_sync.upload_checkpoint(object_store, PREFIX, local, "finetune", name)
    object_store.put_bytes(PREFIX + f"finetune/{name}/model.pt", b"not a checkpoint")
    fresh = tmp_path / "again"
    assert checkpoint_sync.restore(object_store, PREFIX, fresh) == {}
    assert DirectoryCheckpoints(fresh / "finetune").restore() is None


def test_uploader_runs_off_the_callers_thread_and_finish_syncs_the_newest(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    local = tmp_path / "checkpoints"
    uploaded: list[tuple[str, int]] = []
    uploader = checkpoint_sync.CheckpointUploader(
        object_store, PREFIX, local, on_uploaded=lambda phase, step: uploaded.append((phase, step))
    )
    started = time.monotonic()
    uploader.report("finetune", _save(local, "finetune", 3))
    assert time.monotonic() - started < 0.5
    _save(local, "finetune", 6)
    uploader.finish()
    assert uploaded[-1] == ("finetune", 6)
    assert uploader.uploaded == {"finetune": "ckpt-00000006"}
    assert json.loads(object_store.get_bytes(PREFIX + "finetune/latest.json"))["step"] == 6


def _corrupt(store: FileStore, key: str) -> None:
    """Flip the first byte of a stored object behind the store's back (its sha256 stays recorded)."""
    with (store.root / key).open("r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))


def test_restore_falls_back_to_the_older_checkpoint_when_the_pointer_or_its_files_rot(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    local = tmp_path / "worker-1"
    for step in (10, 20):
        checkpoint_sync.upload_checkpoint(store, PREFIX, local, "finetune", _save(local, "finetune", step))
    _corrupt(store, PREFIX + "finetune/latest.json")
    assert checkpoint_sync.restore(store, PREFIX, tmp_path / "worker-2") == {"finetune": 20}

    checkpoint_sync.upload_checkpoint(store, PREFIX, local, "finetune", _save(local, "finetune", 30))
    _corrupt(store, PREFIX + "finetune/ckpt-00000030/model.pt")
    fresh = tmp_path / "worker-3"
    assert checkpoint_sync.restore(store, PREFIX, fresh) == {"finetune": 20}
    state = DirectoryCheckpoints(fresh / "finetune").restore()
    assert state is not None
    assert state["trainer"]["step"] == 20
    assert not (fresh / "finetune" / "ckpt-00000030").exists()


def test_an_uploader_without_a_fresh_lease_leaves_the_pointer_to_the_new_owner(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    local = tmp_path / "checkpoints"
    theirs = tmp_path / "theirs"
    checkpoint_sync.upload_checkpoint(object_store, PREFIX, theirs, "finetune", _save(theirs, "finetune", 9))
    lease_fresh = [True]
    uploader = checkpoint_sync.CheckpointUploader(
        object_store, PREFIX, local, on_uploaded=lambda phase, step: None, may_write=lambda: lease_fresh[0]
    )
    lease_fresh[0] = False
    uploader.report("finetune", _save(local, "finetune", 12))
    uploader.finish()
    assert uploader.uploaded == {}
    assert json.loads(object_store.get_bytes(PREFIX + "finetune/latest.json"))["step"] == 9
