"""Upload throughput on loopback: SDK -> gRPC -> server -> file storage, against a local copy.

Prints MiB/s of ``Client.upload_model`` and of the least work any upload must
do here (read, sha256, write), measured side by side in one run, and their
ratio. Usage: ``python bench/upload_throughput.py [--mib 256] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from prunekit import Client
from prunekit_server.config import Settings
from prunekit_server.server import start_server


def local_copy(source: Path, target: Path) -> None:
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())


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
        mib = payload.stat().st_size / (1 << 20)
        settings = replace(Settings(), port=0, storage=f"file://{root / 'store'}", max_upload_bytes=8 << 30)
        server = start_server(settings)
        upload_s, copy_s = [], []
        try:
            with Client(server.target, transfer_timeout=600) as client:
                for i in range(args.repeat):
                    with open(payload, "r+b") as f:
                        f.seek(2)
                        f.write(os.urandom(16))
                    started = time.perf_counter()
                    client.upload_model(payload)
                    upload_s.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    local_copy(payload, root / f"copy-{i}")
                    copy_s.append(time.perf_counter() - started)
                    (root / f"copy-{i}").unlink()
        finally:
            server.stop(grace=1)
    best_upload, best_copy = min(upload_s), min(copy_s)
    print(f"payload {mib:.0f} MiB, {args.repeat} rounds, best of each (interleaved)")
    print(
        f"upload via SDK + gRPC + server + file store: {mib / best_upload:8.1f} MiB/s ({best_upload:.2f} s)"
    )
    print(f"local read + sha256 + write + fsync:         {mib / best_copy:8.1f} MiB/s ({best_copy:.2f} s)")
    print(f"ratio upload / local copy:                   {best_copy / best_upload:8.2f}")


if __name__ == "__main__":
    main()
