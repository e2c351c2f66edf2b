"""Terminal rendering of reports, analyses, jobs and progress."""

from __future__ import annotations

import io

from prunekit._render import ProgressPrinter, render_analysis, render_job, render_jobs, render_report, table
from prunekit.v1 import job_pb2, model_pb2, report_pb2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_report_table_has_every_number(report: report_pb2.OptimizationReport) -> None:
    text = render_report(report)
    for expected in [
        "baseline",
        "pruned",
        "1,234,567",
        "1,234,000",
        "617,283",
        "4.7 MiB",
        "4.3 MiB",
        "2.5 MiB (1.73x)",
        "987.65 M",
        "12.500",
        "13.250",
        "15.750",
        "12.250",
        "14.500",
        "80.0/s",
        "81.6/s",
        "1.02x",
        "96.88%",
        "0.998765",
        "0.0123",
    ]:
        assert expected in text, expected
    lines = text.splitlines()
    p50 = next(line for line in lines if line.startswith("p50 ms"))
    assert p50.split()[2:] == ["12.500", "12.250"]
    speedup = next(line for line in lines if line.startswith("speed-up"))
    assert speedup.split()[1:] == ["-", "1.02x"]


def test_report_layers_warnings_and_protocol(report: report_pb2.OptimizationReport) -> None:
    text = render_report(report)
    assert "conv1" in text
    assert "864 -> 432" in text
    assert "50.0%" in text
    assert "skipped" in text
    assert "! UNSTRUCTURED_NO_SPEEDUP: zeros do not speed up" in text
    protocol = text.splitlines()[-1]
    assert protocol.startswith("Protocol: onnxruntime 1.20.1, CPUExecutionProvider, cpu, 1 thread, batch 1")
    assert "inputs x:1x3x32x32 float32" in protocol
    assert "warm-up 10, 50 iterations, interleaved" in protocol
    assert "32 synthetic samples" in protocol
    assert text.index("conv1") < text.index("Warnings") < text.index("Protocol")


def test_report_layer_table_is_truncated(report: report_pb2.OptimizationReport) -> None:
    text = render_report(report, max_layers=1)
    assert "... 1 more layer (see report.json)" in text


def test_analysis_table() -> None:
    analysis = model_pb2.ModelAnalysis(
        format=model_pb2.MODEL_FORMAT_ONNX,
        opset=17,
        producer="pytorch 2.10",
        inputs=[
            model_pb2.TensorInfo(
                name="x",
                dtype=model_pb2.DATA_TYPE_FLOAT32,
                shape=[model_pb2.Dimension(symbol="batch"), model_pb2.Dimension(size=3)],
            )
        ],
        parameters=1_290,
        macs=2_500_000,
        size_bytes=8_192,
        node_count=7,
        layers=[
            model_pb2.LayerInfo(
                name="conv1", op_type="Conv", weight_shape=[32, 3, 3, 3], parameters=896, macs=2_000_000
            ),
            model_pb2.LayerInfo(name="fc", op_type="Gemm", weight_shape=[10, 32], parameters=330, macs=320),
        ],
        analyzed_inputs=[model_pb2.InputSpec(name="x", shape=[1, 3, 32, 32])],
        warnings=["dynamic batch assumed 1"],
    )
    text = render_analysis(analysis)
    assert "Model: ONNX, opset 17, produced by pytorch 2.10" in text
    assert "Input:  x float32 [batch, 3]" in text
    assert "MACs for: x:1x3x32x32 float32" in text
    conv = next(line for line in text.splitlines() if line.startswith("conv1"))
    assert conv.split() == ["conv1", "Conv", "32x3x3x3", "896", "2,000,000"]
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "1,290", "2,500,000"]
    assert "MACs: 2,500,000 (2.50 M)" in text
    assert "Size: 8.0 KiB" in text
    assert "Nodes: 7" in text
    assert "! dynamic batch assumed 1" in text


def test_job_and_job_list() -> None:
    job = job_pb2.Job(
        id="job-1",
        state=job_pb2.JOB_STATE_RUNNING,
        model=model_pb2.ModelRef(filename="net.onnx", format=model_pb2.MODEL_FORMAT_ONNX, size_bytes=2048),
        progress=job_pb2.JobProgress(stage="prune", fraction=0.42, message="layer 3/6"),
        labels={"team": "vision"},
    )
    job.create_time.FromSeconds(1_700_000_000)
    text = render_job(job)
    assert "Job job-1  RUNNING" in text
    assert "net.onnx (ONNX, 2.0 KiB)" in text
    assert "42% prune: layer 3/6" in text
    assert "2023-11-14 22:13:20Z" in text
    assert "team=vision" in text
    row = render_jobs([job]).splitlines()[2]
    assert row.split() == ["job-1", "RUNNING", "prune", "42%", "net.onnx", "2023-11-14", "22:13:20Z"]


def test_table_alignment() -> None:
    text = table(["a", "n"], [["x", "1"], ["long", "100"]], "lr")
    assert text.splitlines() == ["a       n", "----  ---", "x       1", "long  100"]


def _job(state: job_pb2.JobState.ValueType, stage: str, fraction: float, message: str = "") -> job_pb2.Job:
    return job_pb2.Job(
        id="j", state=state, progress=job_pb2.JobProgress(stage=stage, fraction=fraction, message=message)
    )


def test_progress_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    ticks = iter([100.0, 112.0, 300.0])  # the repeated stage is not printed, nor timed
    printer = ProgressPrinter(out, clock=lambda: next(ticks))
    printer(_job(job_pb2.JOB_STATE_PENDING, "queued", 0.0))
    printer(_job(job_pb2.JOB_STATE_RUNNING, "prune", 0.3, "layer 1"))
    printer(_job(job_pb2.JOB_STATE_RUNNING, "prune", 0.4, "layer 2"))
    printer(_job(job_pb2.JOB_STATE_SUCCEEDED, "report", 1.0, "done"))
    printer.close()
    assert out.getvalue().splitlines() == [
        "  0% queued (0 s elapsed)",
        " 30% prune: layer 1 (12 s elapsed, ~28 s left)",
        "100% report: done (3 min 20 s elapsed)",
    ]


def test_progress_bar_on_a_tty() -> None:
    out = _Tty()
    ticks = iter([5.0, 9.0])
    printer = ProgressPrinter(out, bar_width=10, clock=lambda: next(ticks))
    printer(_job(job_pb2.JOB_STATE_RUNNING, "prune", 0.5, "half"))
    printer(_job(job_pb2.JOB_STATE_RUNNING, "prune", 0.5, "half"))
    printer.close()
    line = "\r\x1b[K[#####.....]  50% prune: half"
    assert out.getvalue() == f"{line} (0 s elapsed){line} (4 s elapsed, ~4 s left)\n"
