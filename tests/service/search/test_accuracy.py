"""The search judged by accuracy: with a labelled eval split, candidates carry their top-1 and the
accuracy rule (``max_accuracy_drop``) is the bound when no fine-tuning follows."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripts.digits import INPUT_NAME, export_onnx

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.measure.accuracy import Accuracy, AccuracyRule
from prunekit_server.measure.quality import Quality, QualityRule
from prunekit_server.pipeline import JobData, StagedShard, run_optimization
from prunekit_server.search.judging import Bound, Verdict
from tests.service.training.digits import splits, teacher, write_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _verdict(cosine: float, top1: float) -> Verdict:
    return Verdict(Quality(1.0, cosine, 0.0, 8), Accuracy(top1, None, None, 100))


def test_the_accuracy_rule_is_the_bound_when_labels_judge_it() -> None:
    base = Accuracy(0.98, None, None, 100)
    bound = Bound(fidelity=QualityRule(0.99, 0.99), accuracy=AccuracyRule(0.01), baseline=base)
    assert bound.by_accuracy
    assert bound.met_by(_verdict(0.5, 0.975))
    assert not bound.met_by(_verdict(0.999, 0.96))
    assert not bound.met_by(Verdict(Quality(1.0, 1.0, 0.0, 8)))


def test_without_labels_or_a_drop_the_fidelity_floors_bound() -> None:
    floors = QualityRule(0.99, 0.99)
    for bound in (Bound(fidelity=floors, accuracy=AccuracyRule(0.01)), Bound(fidelity=floors)):
        assert not bound.by_accuracy
        assert bound.met_by(_verdict(0.995, 0.1))
        assert not bound.met_by(_verdict(0.9, 0.99))
    assert Bound().met_by(_verdict(0.0, 0.0))


def test_a_labelled_search_measures_and_keeps_accuracy(tmp_path: Path) -> None:
    train, held_out = splits()
    model = export_onnx(teacher(), tmp_path / "digits.onnx")
    data = JobData(
        train=[
            StagedShard(p, uri=p.as_uri()) for p in write_shards(tmp_path / "t", train.inputs[0], train.label)
        ],
        eval=[
            StagedShard(p, uri=p.as_uri())
            for p in write_shards(tmp_path / "e", held_out.inputs[0], held_out.label, shards=1)
        ],
    )
    spec = spec_pb2.OptimizationSpec(
        inputs=[model_pb2.InputSpec(name=INPUT_NAME, shape=[64, 1, 8, 8])],
        target=spec_pb2.TargetSpec(
            latency_speedup=1.2, max_accuracy_drop=0.05, techniques=["channel"], budget_seconds=40
        ),
        benchmark=spec_pb2.BenchmarkSpec(max_seconds=1.0),
        data=spec_pb2.DataSpec(train=[s.uri for s in data.train], eval=[s.uri for s in data.eval]),
    )
    report = run_optimization(
        model, model_pb2.MODEL_FORMAT_ONNX, spec, tmp_path / "w", lambda *a, **k: None, data=data
    ).report
    baseline = report.baseline.accuracy.top1
    candidates = report.search.candidates
    assert candidates
    assert all(c.HasField("accuracy") and c.accuracy.samples == len(held_out) for c in candidates)
    for c in candidates:
        assert c.faithful == (baseline - c.accuracy.top1 <= 0.05 + 1e-12)
    chosen = next(c for c in candidates if c.selected)
    if any(c.faithful and c.meets_target for c in candidates):
        best = max(c.accuracy.top1 for c in candidates if c.faithful and c.meets_target)
        assert chosen.accuracy.top1 == best
