"""`make demo`: train a CNN on real digits, prune it to half its MACs, win the accuracy back, quantize it
to INT8, and show the speed-up measured against the original.

1. Trains :class:`~digits.SmallCNN` (``scripts/digits.py``, beside this script), at widths
   :data:`WIDTHS` where the convolutions' arithmetic, not ONNX Runtime's per-op overhead, sets the
   latency (the default 16-32-32 network runs in ~12 µs, so a smaller one cannot be faster), here on
   scikit-learn's bundled 8x8 digits (train split; no download), exports it to ONNX and writes
   the train and held-out splits as ``.npz`` shards.
2. Starts a real ``prunekit-server`` (storage ``./.prunekit-data``), shows the
   model's layer table (``prunekit analyze``), uploads the shards with the SDK
   (``Client.upload_dataset``) and runs ``examples/recover.yaml`` on them:
   channel pruning to 2x fewer MACs, fine-tuning with distillation from the
   original, static INT8 on top, accuracy on the held-out split, latency at batch 1 and 32.
3. Prints the report and accuracy before and after, downloads the artifacts to
   ``./demo-out`` and checks ``pruned.onnx`` on the held-out digits with ONNX
   Runtime, independently of the server.

Exit status 0 when the job succeeded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from digits import digits_split, export_onnx, train_digits_cnn, write_shards

from prunekit import Client, load_spec, render_report
from prunekit._render import ProgressPrinter
from prunekit.v1 import job_pb2, report_pb2
from prunekit_server.training.datasets import Dataset
from prunekit_server.training.evaluate import accuracy

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("PRUNEKIT_DEMO_OUT", ROOT / "demo-out"))
"""Where the artifacts go; the server stores under ``PRUNEKIT_STORAGE`` (default ./.prunekit-data)."""
SPEC = ROOT / "examples" / "recover.yaml"
BIN = Path(sys.executable).parent
WIDTHS = (32, 96, 96)
"""conv1, conv2 and conv3 output channels of the demo's CNN."""
EPOCHS = 4


def _rel(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def onnx_top1(path: Path, dataset: Dataset) -> float:
    """Top-1 of the ONNX model at ``path`` on a labelled dataset, run here with ONNX Runtime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    batch = given.shape[0] if isinstance(given.shape[0], int) else len(dataset)
    images, labels = dataset.inputs[0], dataset.label
    assert labels is not None
    correct = 0
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        (logits,) = session.run(None, {given.name: padded})
        correct += int((logits[: len(chunk)].argmax(axis=1) == labels[start : start + len(chunk)]).sum())
    return correct / len(images)


def prepare() -> tuple[Path, list[Path], list[Path], Dataset]:
    """Train and export the CNN; write the shards. Returns (model, train shards, eval shards, eval split)."""
    started = time.perf_counter()
    train, held_out = digits_split()
    c1, c2, c3 = WIDTHS
    model = train_digits_cnn(epochs=EPOCHS, seed=0, train=train, c1=c1, c2=c2, c3=c3)
    top1 = accuracy(model, held_out).top1
    print(
        f"== trained a {c1}-{c2}-{c3} CNN on {len(train)} digits in {time.perf_counter() - started:.1f} s: "
        f"top-1 {100 * top1:.2f} % on the {len(held_out)} held-out digits",
        flush=True,
    )
    onnx_path = export_onnx(model, OUT / "digits_cnn.onnx")
    data = OUT / "data"
    for old in data.glob("*.npz"):
        old.unlink()
    train_shards = write_shards(data, train.inputs[0], train.label, shards=2, prefix="train")
    eval_shards = write_shards(data, held_out.inputs[0], held_out.label, shards=1, prefix="eval")
    shards = ", ".join(p.name for p in [*train_shards, *eval_shards])
    print(f"== exported {_rel(onnx_path)}; shards in {_rel(data)}/: {shards}\n", flush=True)
    return onnx_path, train_shards, eval_shards, held_out


def start_server() -> tuple[subprocess.Popen[str], str] | None:
    """A ``prunekit-server`` on a free port, and its address; None when it did not start."""
    server = subprocess.Popen(
        [str(BIN / "prunekit-server"), "--port", "0", "--log-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, "PRUNEKIT_AUTH": os.environ.get("PRUNEKIT_AUTH", "none")},  # local, one user
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"listening on \S+:(\d+)", line)
    if not match:
        print(f"server did not start: {line!r}", file=sys.stderr)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        return None
    return server, f"127.0.0.1:{match.group(1)}"


def _pruned(report: report_pb2.OptimizationReport) -> report_pb2.ModelVariant:
    return next(v for v in report.variants if v.name == "pruned")


def summary(report: report_pb2.OptimizationReport) -> str:
    """Accuracy before and after, in a few lines."""
    pruned = _pruned(report)
    base, after = report.baseline.accuracy.top1, pruned.stats.accuracy.top1
    before = report.finetune.before.top1
    flags = {report_pb2.VariantFlag.Name(f) for f in pruned.flags}
    rule = report.protocol.quality_rule.max_accuracy_drop
    verdict = "meets" if "VARIANT_FLAG_MEETS_ACCURACY_RULE" in flags else "misses"
    runs = ", ".join(
        f"{r.phase}: {r.steps} steps of {r.loss} in {r.seconds:.1f} s on {r.device}"
        for r in report.finetune.runs
    )
    samples = report.baseline.accuracy.samples
    return "\n".join(
        [
            f"== accuracy on the {samples} held-out digits (top-1):",
            f"   original                 {100 * base:6.2f} %   {report.baseline.macs:>9,} MACs",
            f"   pruned, not fine-tuned   {100 * before:6.2f} %   {pruned.stats.macs:>9,} MACs "
            f"({pruned.stats.macs / report.baseline.macs:.2f}x)",
            f"   pruned + distillation    {100 * after:6.2f} %   ({100 * (base - after):.2f} points lost; "
            f"{verdict} the {100 * rule:g}-point rule)",
            f"   fine-tuning: {runs}",
            *speed_lines(report),
        ]
    )


def speed_lines(report: report_pb2.OptimizationReport) -> list[str]:
    """The headline: each variant's measured speed-up over the original at every batch size, and size."""
    base = {
        lat.batch_size: lat.p50_ms
        for lat in report.baseline.latencies
        if lat.runtime.startswith("onnxruntime")
    }
    lines = [f"== speed (p50, ONNX Runtime, {report.protocol.threads} thread(s), measured interleaved):"]
    for variant in report.variants:
        parts = [
            f"{base[lat.batch_size] / lat.p50_ms:.2f}x at batch {lat.batch_size}"
            for lat in variant.stats.latencies
            if lat.runtime.startswith("onnxruntime") and lat.batch_size in base and lat.p50_ms > 0
        ]
        smaller = report.baseline.size_bytes / max(variant.stats.size_bytes, 1)
        lines.append(f"   {variant.name:<24} faster: {', '.join(parts)}; {smaller:.1f}x smaller file")
    return lines


def run_job(address: str, model: Path, train: list[Path], held_out: list[Path]) -> job_pb2.Job:
    """Upload the shards, run recover.yaml on them, print the report; the finished job."""
    with Client(address, timeout=60) as client:
        spec = load_spec(SPEC)
        for split, paths in (("train", train), ("eval", held_out)):
            for path in paths:
                ref = client.upload_dataset(path)
                getattr(spec.data, split).append(ref.uri)
                print(
                    f"   uploaded {path.name}: {ref.samples} samples ({', '.join(ref.arrays)}) -> {ref.uri}"
                )
        print(f"\n$ optimize {_rel(model)} with {_rel(SPEC)} + the shards above", flush=True)
        printer = ProgressPrinter(sys.stdout)
        try:
            job = client.optimize(model, spec, on_progress=printer)
        finally:
            printer.close()
        print(f"\n{render_report(job.report)}\n{summary(job.report)}\n", flush=True)
        client.download_artifacts(job, OUT)
    return job


def main() -> int:
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        if old.is_file():
            old.unlink()
    model, train_shards, eval_shards, held_out = prepare()
    started_server = start_server()
    if started_server is None:
        return 1
    server, address = started_server
    try:
        storage = os.environ.get("PRUNEKIT_STORAGE", "./.prunekit-data")
        print(f"== prunekit-server on {address}, storage {storage}\n", flush=True)
        print(f"$ prunekit analyze {_rel(model)}", flush=True)
        env = {**os.environ, "PRUNEKIT_SERVER": address}
        code = subprocess.call([str(BIN / "prunekit"), "analyze", str(model)], env=env, cwd=ROOT)
        if code != 0:
            return code
        print("\n== uploading the digits with the SDK (Client.upload_dataset)", flush=True)
        run_job(address, model, train_shards, eval_shards)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    pruned = OUT / "pruned.onnx"
    print(
        f"== checked here with ONNX Runtime: {_rel(pruned)} top-1 {100 * onnx_top1(pruned, held_out):.2f} %"
    )
    print(f"== artifacts in {_rel(OUT)}/: {', '.join(sorted(p.name for p in OUT.iterdir() if p.is_file()))}")
    print(f"== demo wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
