"""Generate the Python code of the API from protos/ (run by ``make proto``).

``python scripts/gen_protos.py [OUT_DIR]`` writes ``prunekit/v1/*_pb2*.py(i)``
under OUT_DIR (default: ``client``). The test suite regenerates into a
temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def include_dirs() -> list[str]:
    import google.rpc.status_pb2
    import grpc_tools

    googleapis = Path(google.rpc.status_pb2.__file__).resolve().parent.parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(PROTO_ROOT), str(googleapis), str(well_known)]


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc

    # protoc finds the mypy plugins (protoc-gen-mypy*) next to this Python.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    protos = sorted(PROTO_ROOT.glob("prunekit/v1/*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", *(f"-I{d}" for d in include_dirs())]
    args += [
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
    ]
    args += [str(p.relative_to(PROTO_ROOT)) for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = out_dir / "prunekit" / "v1"
    for proto in protos:
        if "\nservice " not in proto.read_text():
            for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
                (generated / f"{proto.stem}{suffix}").unlink()
    return sorted(generated.glob("*_pb2*"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "client"
    for path in generate(target):
        print(path.relative_to(target))
