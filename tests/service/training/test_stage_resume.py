"""A job interrupted while fine-tuning, run again in the same working directory, resumes from a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunekit.v1 import spec_pb2

from .finetune_cases import CHANNEL, digits_data, digits_model, initializers, run, spec, variant

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class WorkerKilledError(Exception):
    """Stands in for a worker killed right after a checkpoint was written."""


@pytest.mark.parametrize("schedule", ["one_shot", "iterative"])
def test_a_resumed_fine_tune_ends_in_the_weights_of_an_uninterrupted_one(
    tmp_path: Path, schedule: str
) -> None:
    model = digits_model(tmp_path)
    data = digits_data(tmp_path / "data")
    prune: dict[str, Any] = dict(CHANNEL)
    if schedule == "iterative":
        prune.update(schedule=spec_pb2.PRUNE_SCHEDULE_ITERATIVE, steps=2)
    finetune = spec_pb2.FinetuneSpec(steps=60, checkpoint_every_steps=10, eval_every=10, seed=3)
    job = spec(prune, finetune)
    straight = run(model, job, tmp_path / "straight", data)

    workdir = tmp_path / "job"
    seen: list[Mapping[str, Any]] = []

    def killed(stage: str, fraction: float, message: str, details: Mapping[str, Any] | None = None) -> None:
        checkpoint = (details or {}).get("checkpoint")
        if checkpoint is not None:
            seen.append(checkpoint)
            if checkpoint["phase"] == "finetune" and checkpoint["step"] == 20:
                raise WorkerKilledError

    with pytest.raises(WorkerKilledError):
        run(model, job, workdir, data, killed)
    pointer = json.loads((workdir / "checkpoints" / "finetune" / "latest.json").read_text())
    assert (pointer["name"], pointer["step"]) == ("ckpt-00000020", 20)
    assert not (workdir / "artifacts" / "pruned.onnx").exists()

    resumed = run(model, job, workdir, data)
    runs = {r.phase: r for r in resumed.report.finetune.runs}
    assert runs["finetune"].resumed_from_step == 20
    assert runs["finetune"].steps == runs["finetune"].total_steps
    if schedule == "iterative":
        assert runs["round-01"].resumed_from_step == runs["round-01"].total_steps == 30
    expected = {r.phase: r for r in straight.report.finetune.runs}
    assert runs["finetune"].best_metric == expected["finetune"].best_metric
    assert list(runs["finetune"].loss_curve) == pytest.approx(list(expected["finetune"].loss_curve), abs=1e-6)
    want = initializers(straight.artifacts["pruned.onnx"])
    got = initializers(resumed.artifacts["pruned.onnx"])
    assert got.keys() == want.keys()
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-6, rtol=0, err_msg=name)
    assert variant(resumed.report).stats.accuracy.top1 == variant(straight.report).stats.accuracy.top1
