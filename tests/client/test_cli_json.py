"""``--json`` for machines: a stable shape, compact watch events, lists without reports, quiet broken pipes,
and ``--fail-on`` exit 3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prunekit._machine import to_json
from prunekit.v1 import job_pb2, report_pb2

from .conftest import FakeService, run, sample_report


def test_every_field_is_present_with_numbers_and_short_enum_names() -> None:
    report = sample_report()
    report.variants[0].flags.extend([report_pb2.VARIANT_FLAG_BELOW_QUALITY_RULE])
    data = to_json(report)
    assert set(data) == {f.name for f in report_pb2.OptimizationReport.DESCRIPTOR.fields}
    assert data["baseline"]["macs"] == 987_654_321
    assert data["baseline"]["accuracy"] is None
    (variant,) = data["variants"]
    assert variant["flags"] == ["BELOW_QUALITY_RULE"]
    assert variant["format"] == "ONNX"
    assert variant["quantization"] is None
    assert data["search"] is None
    json.dumps(data, allow_nan=False)
    empty = to_json(job_pb2.Job(id="j"))
    assert set(empty) == {f.name for f in job_pb2.Job.DESCRIPTOR.fields}
    assert empty["state"] == "UNSPECIFIED"
    assert empty["attempt"] == 0
    assert empty["create_time"] is None
    assert empty["labels"] == {}


def test_watch_prints_one_compact_event_per_update(
    target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    capsys.readouterr()
    assert run(target, "jobs", "watch", "job-1", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    keys = {"job_id", "state", "stage", "fraction", "message", "attempt", "finetune", "error"}
    assert all(set(event) == keys for event in events)
    assert [e["state"] for e in events][-1] == "SUCCEEDED"
    assert events[-1]["fraction"] == 1.0
    assert all(len(line) < 400 and ": " not in line for line in lines)


def test_list_leaves_reports_out_unless_asked(
    target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 0
    capsys.readouterr()
    assert run(target, "jobs", "list", "--json") == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert job["state"] == "SUCCEEDED"
    assert job["report"] is None
    assert run(target, "jobs", "list", "--json", "--reports") == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert job["report"]["variants"][0]["name"] == "pruned"


@pytest.mark.parametrize(
    ("flag", "rules", "status"),
    [
        (report_pb2.VARIANT_FLAG_BELOW_QUALITY_RULE, "quality", 3),
        (report_pb2.VARIANT_FLAG_BELOW_ACCURACY_RULE, "quality,accuracy", 3),
        (report_pb2.VARIANT_FLAG_MISSES_TARGET, "target", 3),
        (report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE, "slower", 3),
        (report_pb2.VARIANT_FLAG_SLOWER_THAN_BASELINE, "quality,accuracy", 0),
    ],
)
def test_fail_on_exits_3_when_a_succeeded_job_misses_a_named_rule(
    service: FakeService,
    target: str,
    model: Path,
    spec: Path,
    capsys: pytest.CaptureFixture[str],
    flag: report_pb2.VariantFlag.ValueType,
    rules: str,
    status: int,
) -> None:
    service.flags = [flag]
    assert run(target, "optimize", str(model), "--spec", str(spec), "--json", "--fail-on", rules) == status
    out, err = capsys.readouterr()
    assert json.loads(out)["variants"][0]["name"] == "pruned"
    name = report_pb2.VariantFlag.Name(flag).removeprefix("VARIANT_FLAG_")
    assert (f"misses --fail-on {rules}: pruned {name}" in err) == (status == 3)
    assert run(target, "jobs", "watch", "job-1", "--fail-on", rules) == status


def test_a_candidate_auto_did_not_select_is_not_judged(
    service: FakeService, target: str, model: Path, spec: Path
) -> None:
    service.flags = [report_pb2.VARIANT_FLAG_NOT_SELECTED, report_pb2.VARIANT_FLAG_BELOW_QUALITY_RULE]
    assert run(target, "optimize", str(model), "--spec", str(spec), "--fail-on", "quality") == 0


def test_an_unknown_rule_is_a_usage_error(target: str, model: Path, spec: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(target, "optimize", str(model), "--spec", str(spec), "--fail-on", "quality,speed")
    assert exit_.value.code == 2


def test_a_closed_stdout_ends_quietly_with_0(
    target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    capsys.readouterr()
    command = [sys.executable, "-m", "prunekit", "--server", target, "jobs", "list", "--json", "--reports"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read what it wanted
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert err == ""


def test_list_sends_its_state_and_label_filters(
    service: FakeService, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(target, "jobs", "list", "--state", "failed", "--state", "CANCELLED", "--label", "team=a") == 0
    (request,) = service.requests["ListJobs"]
    assert list(request.states) == [job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED]
    assert dict(request.labels) == {"team": "a"}
    with pytest.raises(SystemExit):
        run(target, "jobs", "list", "--state", "done")
