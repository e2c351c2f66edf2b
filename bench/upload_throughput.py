"""Transfer throughput on loopback: uploads and downloads through a real server process, against a local copy.

The server runs as its own process (``prunekit-server``, file storage), as it does when deployed, so client
and server do not share one interpreter. Printed side by side in one run, best of ``--repeat`` rounds:

- upload: ``Client.upload_model`` of a ``--mib`` MiB model (new bytes every round);
- download: ``Client.download_artifact`` of a job's ``pruned.onnx`` of about ``--mib`` MiB (one
  unstructured job on a model with one large MatMul weight);
- the least work any transfer must do here: read, sha256, write and fsync the same bytes locally.

Usage: ``python bench/upload_throughput.py [--mib 256] [--repeat 3]``. Goal: uploads and downloads at
>= 400 MiB/s on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from prunekit import Client, load_spec
from prunekit.v1 import job_pb2

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
SPEC = "inputs: [{{name: x, shape: [1, {n}]}}]\nprune: {{method: unstructured, ratio: 0.5}}\n"
SPEC += "benchmark: {{warmup: 1, iterations: 2, max_seconds: 2}}\nevaluation: {{samples: 2}}\n"


def local_copy(source: Path, target: Path) -> None:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())


@contextmanager
def server_process(store: Path) -> Iterator[str]:
    command = [sys.executable, "-m", "prunekit_server.main", "--port", "0", "--storage", f"file://{store}"]
    env = dict(
        os.environ,
        PRUNEKIT_MAX_UPLOAD_BYTES=str(8 << 30),
        PRUNEKIT_WORKER_MEMORY_BYTES="0",
        PRUNEKIT_AUTH="none",
    )
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = _LISTENING.search(line)
            if found:
                yield f"{found.group(1)}:{found.group(2)}"
                break
        else:
            raise SystemExit("the server did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def matmul_model(path: Path, mib: int) -> int:
    """An ONNX model whose one MatMul weight is about ``mib`` MiB; returns its input width."""
    n = int((mib * (1 << 20) / 4) ** 0.5)
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return n


def best(seconds: list[float]) -> float:
    return min(seconds)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prunekit-bench-") as tmp:
        root = Path(tmp)
        payload = root / "model.onnx"
        with open(payload, "wb") as f:
            f.write(b"\x08\x08")
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        big = root / "big.onnx"
        n = matmul_model(big, args.mib)
        (root / "spec.yaml").write_text(SPEC.format(n=n))
        upload_s: list[float] = []
        download_s: list[float] = []
        copy_s: list[float] = []
        with server_process(root / "store") as target, Client(target, transfer_timeout=600) as client:
            job = client.optimize(big, load_spec(root / "spec.yaml"))
            if job.state != job_pb2.JOB_STATE_SUCCEEDED:
                raise SystemExit(f"the job did not succeed: {job.error.message}")
            size = next(a.size_bytes for a in job.artifacts if a.name == "pruned.onnx")
            for i in range(args.repeat):
                with open(payload, "r+b") as f:
                    f.seek(2)
                    f.write(os.urandom(16))
                upload_s.append(timed(lambda: client.upload_model(payload)))
                out = root / f"down-{i}.onnx"
                download_s.append(timed(lambda out=out: client.download_artifact(job.id, "pruned.onnx", out)))
                out.unlink()
                copy_s.append(timed(lambda i=i: local_copy(payload, root / f"copy-{i}")))
                (root / f"copy-{i}").unlink()
        mib, down_mib = payload.stat().st_size / (1 << 20), size / (1 << 20)
    print(f"{args.repeat} rounds, best of each (interleaved); server in its own process, file storage")
    rows = [
        ("upload (SDK -> gRPC -> server -> store)", mib, best(upload_s)),
        ("download (store -> server -> gRPC -> SDK)", down_mib, best(download_s)),
        ("local read + sha256 + write + fsync", mib, best(copy_s)),
    ]
    for name, size_mib, seconds in rows:
        print(f"{name:44s} {size_mib:6.0f} MiB {size_mib / seconds:8.1f} MiB/s ({seconds:.2f} s)")
    local = mib / best(copy_s)
    print(f"ratio upload / local copy:   {mib / best(upload_s) / local:6.2f}")
    print(f"ratio download / local copy: {down_mib / best(download_s) / local:6.2f}")


if __name__ == "__main__":
    main()
