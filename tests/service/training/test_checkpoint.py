"""Checkpoints: an interrupted fine-tune resumes to the same weights; corrupt or partial ones are skipped."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit_server.training.checkpoint import DirectoryCheckpoints, rng_state, set_rng_state
from prunekit_server.training.finetune import FinetuneConfig, FinetuneEvent, finetune

from .digits import SmallCNN, prune_half, splits, teacher

CONFIG = FinetuneConfig(
    epochs=0, steps=60, batch_size=64, lr=3e-3, device="cpu", eval_every=10, warmup_steps=5, grad_clip=5.0
)


class KilledError(Exception):
    """Stands in for a worker killed mid-run."""


def _kill_at(step: int) -> object:
    def progress(event: FinetuneEvent) -> None:
        if event.step == step:
            raise KilledError

    return progress


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_an_interrupted_fine_tune_resumes_to_the_same_weights(tmp_path: Path, optimizer: str) -> None:
    train, held_out = splits()
    config = FinetuneConfig.from_dict({**CONFIG.to_dict(), "optimizer": optimizer})
    straight = prune_half(teacher())
    expected = finetune(straight, None, train, held_out, config)

    sink = DirectoryCheckpoints(tmp_path / "ckpt", every_steps=20)
    with pytest.raises(KilledError):
        finetune(prune_half(teacher()), None, train, held_out, config, _kill_at(33), sink)  # type: ignore[arg-type]
    assert sink.saved_steps == [20]
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["step"] == 20

    resumed_model = prune_half(teacher())
    sink = DirectoryCheckpoints(tmp_path / "ckpt", every_steps=20)
    resumed = finetune(resumed_model, None, train, held_out, config, None, sink)
    assert resumed.resumed_from_step == 20
    assert sink.saved_steps == [40, 60]
    assert resumed.steps == expected.steps == 60
    assert resumed.losses == pytest.approx(expected.losses, abs=1e-6)
    assert resumed.best_metric == expected.best_metric
    assert resumed.best_step == expected.best_step
    for name, value in _weights(straight).items():
        torch.testing.assert_close(resumed_model.state_dict()[name], value, atol=1e-6, rtol=0)


def test_corrupt_and_partial_checkpoints_are_skipped(tmp_path: Path) -> None:
    train, _ = splits()
    config = FinetuneConfig(epochs=0, steps=30, device="cpu")
    directory = tmp_path / "ckpt"
    sink = DirectoryCheckpoints(directory, every_steps=10, keep=3)
    finetune(prune_half(teacher()), None, train, None, config, None, sink)
    assert sink.saved_steps == [10, 20, 30]
    assert sorted(p.name for p in directory.iterdir()) == [
        "ckpt-00000010",
        "ckpt-00000020",
        "ckpt-00000030",
        "latest.json",
    ]

    def restored_step() -> int | None:
        state = DirectoryCheckpoints(directory).restore()
        return None if state is None else int(state["trainer"]["step"])

    assert restored_step() == 30
    model_file = directory / "ckpt-00000030" / "model.pt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    reader = DirectoryCheckpoints(directory)
    assert reader.restore() is not None
    assert reader.skipped == ["ckpt-00000030: sha256 mismatch for model.pt"]
    assert restored_step() == 20

    (directory / "ckpt-00000020" / "manifest.json").unlink()  # partial: crashed before its manifest
    assert restored_step() == 10
    (directory / "latest.json").write_text("{truncated")
    assert restored_step() == 10
    (directory / "ckpt-00000010" / "optimizer.pt").unlink()
    assert restored_step() is None

    resumed = finetune(
        prune_half(teacher()), None, train, None, config, None, DirectoryCheckpoints(directory)
    )
    assert resumed.resumed_from_step is None
    assert resumed.steps == 30


def test_save_keeps_the_newest_and_writes_the_pointer_last(tmp_path: Path) -> None:
    sink = DirectoryCheckpoints(tmp_path, every_steps=0, keep=2)
    for step in (1, 2, 3):
        sink.save(step, {"model": {"w": torch.full((2,), float(step))}, "trainer": {"step": step}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000002", "ckpt-00000003", "latest.json"]
    pointer = json.loads((tmp_path / "latest.json").read_text())
    manifest = json.loads((tmp_path / "ckpt-00000003" / "manifest.json").read_text())
    assert pointer["name"] == "ckpt-00000003"
    assert pointer["files"] == manifest["files"]
    assert set(pointer["files"]) == {"model.pt", "trainer.pt"}
    state = sink.restore()
    assert state is not None
    assert state["trainer"] == {"step": 3}
    torch.testing.assert_close(state["model"]["w"], torch.full((2,), 3.0))
    # A pointer to a checkpoint that was removed falls back to the newest remaining one.
    shutil.rmtree(tmp_path / "ckpt-00000003")
    state = sink.restore()
    assert state is not None
    assert state["trainer"] == {"step": 2}


def test_due_by_steps_and_by_seconds(tmp_path: Path) -> None:
    by_steps = DirectoryCheckpoints(tmp_path, every_steps=5)
    assert [s for s in range(1, 16) if by_steps.due(s, 0.0)] == [5, 10, 15]
    by_time = DirectoryCheckpoints(tmp_path, every_seconds=10.0)
    start = by_time._last_time
    assert not by_time.due(1, start + 9.0)
    assert by_time.due(2, start + 10.0)
    with pytest.raises(ValueError, match=">= 0"):
        DirectoryCheckpoints(tmp_path, every_steps=-1)


def test_checkpoint_every_seconds_during_training(tmp_path: Path) -> None:
    train, _ = splits()
    sink = DirectoryCheckpoints(tmp_path, every_seconds=1e-9)
    finetune(SmallCNN(), None, train, None, FinetuneConfig(epochs=0, steps=3, device="cpu"), None, sink)
    assert sink.saved_steps == [1, 2, 3]


def test_rng_states_round_trip() -> None:
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_a_checkpoint_of_another_config_or_shape_is_ignored(tmp_path: Path) -> None:
    train, _ = splits()
    config = FinetuneConfig(epochs=0, steps=4, device="cpu")
    finetune(prune_half(teacher()), None, train, None, config, None, DirectoryCheckpoints(tmp_path))
    other = FinetuneConfig(epochs=0, steps=4, device="cpu", lr=0.5)
    fresh = finetune(prune_half(teacher()), None, train, None, other, None, DirectoryCheckpoints(tmp_path))
    assert (fresh.resumed_from_step, fresh.steps) == (None, 4)
    wider = teacher()
    again = finetune(wider, None, train, None, config, None, DirectoryCheckpoints(tmp_path / "other"))
    assert again.resumed_from_step is None
    shapes = finetune(teacher(), None, train, None, other, None, DirectoryCheckpoints(tmp_path))
    assert shapes.resumed_from_step is None, (
        "a checkpoint of the pruned model was loaded into the unpruned one"
    )


def test_a_manifest_naming_files_outside_its_checkpoint_is_rejected(tmp_path: Path) -> None:
    sink = DirectoryCheckpoints(tmp_path / "ckpt")
    sink.save(1, {"trainer": {"step": 1}})
    (tmp_path / "outside.pt").write_bytes(b"x")
    manifest = tmp_path / "ckpt" / "ckpt-00000001" / "manifest.json"
    manifest.write_text(json.dumps({"step": 1, "files": {"../../outside.pt": "0" * 64}}))
    assert sink.restore() is None
    assert sink.skipped == ["ckpt-00000001: bad file name in manifest: '../../outside.pt'"]


def test_a_run_that_stopped_early_stays_stopped_when_resumed(tmp_path: Path) -> None:
    train, held_out = splits()
    config = FinetuneConfig(epochs=0, steps=400, lr=0.0, device="cpu", eval_every=5, patience=2)
    first = finetune(teacher(), None, train, held_out, config, None, DirectoryCheckpoints(tmp_path))
    assert first.stop_reason == "early_stopping"
    again_model = teacher()
    again = finetune(again_model, None, train, held_out, config, None, DirectoryCheckpoints(tmp_path))
    assert (again.resumed_from_step, again.steps, again.stop_reason) == (
        first.steps,
        first.steps,
        "early_stopping",
    )
    assert again.losses == first.losses
