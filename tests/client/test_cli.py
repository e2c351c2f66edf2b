"""The ``prunekit`` command against the in-process service double: output, exit codes, error lines."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest

from prunekit import Client, cli
from prunekit.text.markdown import render_markdown
from prunekit.v1 import job_pb2

from .conftest import FakeService, make_status, run, sample_report


def test_optimize_prints_the_report_and_downloads(
    target: str, model: Path, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    assert (
        run(target, "optimize", str(model), "--spec", str(spec), "--out", str(out_dir), "--label", "a=b") == 0
    )
    out, err = capsys.readouterr()
    assert "Job job-1 SUCCEEDED" in out
    assert "617,283" in out
    assert "Protocol: onnxruntime 1.20.1" in out
    assert " 50% prune: layer 3/6" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["pruned.onnx", "report.json", "report.md"]
    report = json.loads((out_dir / "report.json").read_text())
    assert report["variants"][0]["name"] == "pruned"


def test_optimize_json_prints_only_the_report(
    target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(target, "optimize", str(model), "--spec", str(spec), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["baseline"]["nonzero_parameters"] == 1234000


def test_optimize_no_wait(target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    assert capsys.readouterr().out == "job-1\n"
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "PENDING"


def test_failed_job_exits_1_with_the_error_line(
    service: FakeService, target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.outcome = "failed"
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 1
    err = capsys.readouterr().err
    assert "error: FAILED_PRECONDITION UNSUPPORTED_MODEL: op NonZero is not supported" in err.splitlines()


def test_bad_spec_file_exits_2_before_uploading(
    service: FakeService, target: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("prune:\n  ratoi: 0.5\n  method: structured\n")
    assert run(target, "optimize", str(model), "--spec", str(bad)) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT INVALID_SPEC: invalid spec in ")
    assert "  - prune.ratoi: unknown field (did you mean 'ratio'?)" in lines
    assert any(line.startswith("  - prune.method: unknown value 'structured'") for line in lines)
    assert service.uploads == []


BAD_RANGE = "prune:\n  method: unstructured\n  ratio: 1.5\n  bogus: 1\n"


def _assert_both_problems_once(err: str) -> None:
    lines = err.splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT INVALID_SPEC: invalid spec in ")
    assert lines[0].endswith(": 2 problems")
    assert lines[1:] == [
        "  - prune.bogus: unknown field",
        "  - prune.ratio: must be a number with 0 < ratio < 1, got 1.5",
    ]


def test_range_problems_are_refused_with_parse_problems_before_uploading(
    service: FakeService, target: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RANGE)
    assert run(target, "optimize", str(model), "--spec", str(bad)) == 2
    _assert_both_problems_once(capsys.readouterr().err)
    assert service.uploads == []
    assert service.requests["CreateJob"] == []


def test_spec_problems_are_found_without_a_server(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RANGE)
    argv = ["--server", "127.0.0.1:1", "--timeout", "1", "--retries", "0"]
    assert cli.main([*argv, "optimize", str(model), "--spec", str(bad)]) == 2
    _assert_both_problems_once(capsys.readouterr().err)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_spec_nested_thousands_deep_exits_2(
    model: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / f"deep{suffix}"
    deep.write_text('{"prune": ' + "[" * 4000 + "]" * 4000 + "}")
    argv = ["--server", "127.0.0.1:1", "--timeout", "1", "--retries", "0"]
    assert cli.main([*argv, "optimize", str(model), "--spec", str(deep)]) == 2
    err = capsys.readouterr().err
    assert "nested more than 32 levels deep" in err
    assert "Traceback" not in err


def test_torchscript_models_need_declared_inputs_before_uploading(
    service: FakeService, target: str, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted = tmp_path / "net.pt"
    scripted.write_bytes(b"x" * 100)
    assert run(target, "optimize", str(scripted), "--spec", str(spec)) == 2
    assert "  - inputs: required for TorchScript models" in capsys.readouterr().err
    assert service.uploads == []


def test_server_invalid_spec_lists_each_violation_once(
    service: FakeService, target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.fail["CreateJob"] = [
        make_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid spec: spec.prune.ratio: must be < 1; spec.inputs: required for TorchScript",
            "INVALID_SPEC",
            [("spec.prune.ratio", "must be < 1"), ("spec.inputs", "required for TorchScript")],
        )
    ]
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-3:] == [
        "error: INVALID_ARGUMENT INVALID_SPEC: invalid spec: 2 problems",
        "  - spec.prune.ratio: must be < 1",
        "  - spec.inputs: required for TorchScript",
    ]
    assert err.count("must be < 1") == 1


def test_server_violations_are_listed(
    service: FakeService, target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.fail["CreateJob"] = [
        make_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid spec",
            "INVALID_SPEC",
            [("spec.prune.ratio", "must be < 1"), ("spec.inputs", "required for TorchScript")],
        )
    ]
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[-3:] == [
        "error: INVALID_ARGUMENT INVALID_SPEC: invalid spec",
        "  - spec.prune.ratio: must be < 1",
        "  - spec.inputs: required for TorchScript",
    ]


def test_interrupt_prints_the_job_id(
    target: str, model: Path, spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: Client, job_id: str, **kwargs: object) -> job_pb2.Job:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "wait", interrupted)
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 130
    err = capsys.readouterr().err
    assert "job job-1 keeps running" in err
    assert "prunekit jobs cancel job-1" in err


@pytest.mark.parametrize(
    "args",
    [
        ["optimize", "MODEL"],
        ["optimize", "MODEL", "--spec", "missing.yaml"],
        ["analyze", "MODEL", "--input", "x:1xAx3"],
        ["analyze", "MODEL", "--input", "1x3"],
        ["optimize", "MODEL", "--spec", "SPEC", "--label", "novalue"],
        ["jobs"],
        ["analyze", "missing.onnx"],
        ["--cert", "SPEC", "jobs", "list"],
        ["--key", "SPEC", "jobs", "list"],
    ],
)
def test_usage_errors_exit_2(target: str, model: Path, spec: Path, args: list[str]) -> None:
    argv = [str(model) if a == "MODEL" else str(spec) if a == "SPEC" else a for a in args]
    with pytest.raises(SystemExit) as info:
        run(target, *argv)
    assert info.value.code == 2


def test_unknown_model_suffix_is_a_usage_error(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weird = tmp_path / "net.bin"
    weird.write_bytes(b"x")
    with pytest.raises(SystemExit) as info:
        run(target, "analyze", str(weird))
    assert info.value.code == 2
    assert "cannot tell the model format" in capsys.readouterr().err


def test_analyze_table_and_json(
    service: FakeService, target: str, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(target, "analyze", str(model), "--input", "x:1x3x32x32", "--input", "in:put:2,8") == 0
    out = capsys.readouterr().out
    assert "conv1" in out
    assert "884,736" in out
    inputs = service.requests["AnalyzeModel"][0].inputs
    assert [(i.name, list(i.shape)) for i in inputs] == [("x", [1, 3, 32, 32]), ("in:put", [2, 8])]
    assert run(target, "analyze", str(model), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["node_count"] == 3
    assert data["layers"][0]["op_type"] == "Conv"


def test_jobs_commands(
    service: FakeService,
    target: str,
    model: Path,
    spec: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    capsys.readouterr()
    assert run(target, "jobs", "list", "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "job-2" in out
    assert "job-1" not in out
    assert run(target, "jobs", "list", "--json") == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == ["job-2", "job-1"]
    assert run(target, "jobs", "watch", "job-1") == 0
    out = capsys.readouterr().out
    assert "Job job-1  SUCCEEDED" in out
    assert "617,283" in out
    assert run(target, "jobs", "get", "job-1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "SUCCEEDED"
    assert run(target, "download", "job-1", "--out", str(tmp_path / "dl"), "--name", "report.md") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "dl" / "report.md")
    assert run(target, "jobs", "cancel", "job-2") == 0
    assert capsys.readouterr().out.strip() == "job job-2 CANCELLED"
    assert run(target, "jobs", "cancel", "job-1") == 1
    assert "error: FAILED_PRECONDITION JOB_ALREADY_FINISHED: job already ended" in capsys.readouterr().err
    assert run(target, "jobs", "get", "nope") == 1
    assert capsys.readouterr().err.startswith("error: NOT_FOUND JOB_NOT_FOUND:")


def test_watch_json_lines_and_failure_exit(
    service: FakeService, target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service.outcome = "failed"
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    capsys.readouterr()
    assert run(target, "jobs", "watch", "job-1", "--json") == 1
    out, err = capsys.readouterr()
    states = [json.loads(line)["state"] for line in out.splitlines()]
    assert states == ["PENDING", "RUNNING", "FAILED"]
    assert err.startswith("error: FAILED_PRECONDITION UNSUPPORTED_MODEL:")


def test_unreachable_server_exits_1_with_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--server", "127.0.0.1:1", "--timeout", "1", "--retries", "4", "jobs", "get", "x"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: UNAVAILABLE: cannot reach a prunekit server at 127.0.0.1:1")
    assert "connection refused" in line


def test_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_SERVER", "example:1234")
    assert cli.build_parser().parse_args(["jobs", "list"]).server == "example:1234"


def _succeeded(service: FakeService, target: str, model: Path, spec: Path) -> str:
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 0
    (job_id,) = service.jobs
    return job_id


def test_report_prints_markdown_and_json(
    service: FakeService, target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _succeeded(service, target, model, spec)
    capsys.readouterr()
    assert run(target, "report", job_id) == 0
    out = capsys.readouterr().out
    assert out == render_markdown(sample_report())
    assert "| p50 ms | 12.500 | 12.250 |" in out
    assert run(target, "report", job_id, "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["variants"][0]["name"] == "pruned"


def test_report_out_downloads_the_stored_file_or_renders_it(
    service: FakeService,
    target: str,
    model: Path,
    spec: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_id = _succeeded(service, target, model, spec)
    capsys.readouterr()
    out_dir = tmp_path / "r"
    assert run(target, "report", job_id, "--format", "md", "--out", str(out_dir)) == 0
    assert capsys.readouterr().out.strip() == str(out_dir / "report.md")
    assert (out_dir / "report.md").read_text() == "# report\n"  # the stored artifact, not a re-rendering
    assert run(target, "report", job_id, "--format", "json", "--out", str(out_dir)) == 0
    assert json.loads((out_dir / "report.json").read_text())["baseline"]["macs"] == "987654321"
    assert run(target, "report", job_id, "--format", "html", "--out", str(out_dir)) == 1
    assert f"error: job {job_id} has no report.html" in capsys.readouterr().err
    page = b"<!DOCTYPE html><html><body>plots</body></html>"
    service.artifacts[(job_id, "report.html")] = page
    service.jobs[job_id].artifacts.add(
        name="report.html", sha256=hashlib.sha256(page).hexdigest(), size_bytes=len(page)
    )
    assert run(target, "report", job_id, "--format", "html", "--out", str(out_dir)) == 0
    assert (out_dir / "report.html").read_bytes() == page


def test_report_of_an_unfinished_or_failed_job_exits_1(
    service: FakeService, target: str, model: Path, spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(target, "optimize", str(model), "--spec", str(spec), "--no-wait") == 0
    capsys.readouterr()
    assert run(target, "report", "job-1") == 1
    assert "error: job job-1 is PENDING; its report comes when it succeeds" in capsys.readouterr().err
    service.outcome = "failed"
    assert run(target, "optimize", str(model), "--spec", str(spec)) == 1
    capsys.readouterr()
    assert run(target, "report", "job-2", "--format", "html") == 1
    assert "UNSUPPORTED_MODEL" in capsys.readouterr().err


def test_report_usage(target: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(target, "report", "job-1", "--format", "pdf")
    assert exit_info.value.code == 2
