"""`make demo`: start a server, make a sample model, analyse and optimize it through the CLI, stop.

Everything is local: the server stores into ./.prunekit-data, the model is
made here (no downloads), results land in ./demo-out.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"
BIN = Path(sys.executable).parent


def main() -> int:
    started = time.perf_counter()
    from prunekit_server.samples import write_sample_model

    OUT.mkdir(exist_ok=True)
    model = OUT / "sample_cnn.onnx"
    shape = write_sample_model(model, "onnx", "cnn", width=32, image_size=64)
    print(f"== made {model.relative_to(ROOT)}: a ResNet-style CNN, input {shape}\n", flush=True)

    server = subprocess.Popen(
        [str(BIN / "prunekit-server"), "--port", "0", "--log-level", "WARNING"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"listening on \S+:(\d+)", line)
        if not match:
            print(f"server did not start: {line!r}", file=sys.stderr)
            return 1
        env = {**os.environ, "PRUNEKIT_SERVER": f"127.0.0.1:{match.group(1)}"}
        print(f"== prunekit-server on port {match.group(1)}, storage ./.prunekit-data\n", flush=True)
        cli = str(BIN / "prunekit")
        steps = [
            [cli, "analyze", str(model)],
            [
                cli,
                "optimize",
                str(model),
                "--spec",
                str(ROOT / "examples" / "quantize.yaml"),
                "--out",
                str(OUT),
            ],
        ]
        for step in steps:
            print(
                "$ prunekit "
                + " ".join(os.path.relpath(a, ROOT) if a.startswith("/") else a for a in step[1:])
            )
            code = subprocess.call(step, env=env, cwd=ROOT)
            print(flush=True)
            if code != 0:
                return code
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"== artifacts in {OUT.relative_to(ROOT)}/: {', '.join(sorted(p.name for p in OUT.iterdir()))}")
    print(f"== demo wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
