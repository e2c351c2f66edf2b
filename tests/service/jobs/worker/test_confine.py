"""The worker sandbox in real processes: as root, a confined process is another uid, sees an empty
file store, cannot read a non-dumpable server's environment, open an IPv4/IPv6 socket or ptrace; a real
server's workers run that way and still finish their jobs. Skipped where this machine cannot (not root,
no seccomp), with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import prunekit
import prunekit_server
from prunekit.v1 import job_pb2
from prunekit_server.jobs.worker.faults import FAULT_LABEL
from prunekit_server.server import start_server
from tests.faults.harness import descendants
from tests.samples import write_sample_model
from tests.service.api.conftest import TEST_SETTINGS

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping to another uid and mount namespaces need root"
)
NOBODY = 65534

_PROBE = """
import ctypes, json, os, socket, sys
from pathlib import Path
from prunekit_server.jobs.worker.confine import confine
sandbox, workdir, secret, server_pid = json.loads(sys.argv[1])
applied = confine(sandbox, Path(workdir))
found = {"applied": applied, "uid": os.getuid()}
def attempt(name, action):
    try:
        action()
        found[name] = "allowed"
    except OSError as exc:
        found[name] = exc.errno
attempt("store", lambda: open(secret).read())
attempt("environ", lambda: open(f"/proc/{server_pid}/environ", "rb").read())
attempt("inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
attempt("unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
libc = ctypes.CDLL(None, use_errno=True)
found["ptrace"] = libc.ptrace(16, server_pid, 0, 0) == 0 or ctypes.get_errno()
(Path(workdir) / "out.txt").write_text("written")
found["workdir"] = (Path(workdir) / "out.txt").read_text()
print(json.dumps(found))
"""

_SERVER_LIKE = """
import sys, time
from prunekit_server.jobs.worker.confine import protect_server
assert protect_server()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def passable() -> Iterator[Path]:
    """A directory under /tmp that other users may pass (pytest's own are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="prunekit-confine-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@ROOT_ONLY
def test_a_confined_process_reaches_nothing_of_the_server(passable: Path) -> None:
    store = passable / "store"
    (store / "tenants").mkdir(parents=True)
    secret = store / "tenants" / "secret.txt"
    secret.write_text("another tenant's model")
    workdir = passable / "server" / "job"
    workdir.mkdir(parents=True, mode=0o700)
    (workdir / "task.json").write_text("{}")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER_LIKE],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "AWS_SECRET_ACCESS_KEY": "shh"},
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        sandbox = {"uid": NOBODY, "gid": NOBODY, "hide": [str(store)]}
        argument = json.dumps([sandbox, str(workdir), str(secret), server.pid])
        python = _passable_python()
        env = {**os.environ, "PYTHONPATH": str(Path(prunekit_server.__file__).parent.parent)}
        probe = subprocess.run(
            [python, "-c", _PROBE, argument],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
    finally:
        server.kill()
        server.wait(timeout=30)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    print(python, found)
    assert (found["applied"]["mounts"], found["applied"]["seccomp"]) == ("on", "on")
    assert found["store"] in (2, 13), "the store is hidden under an empty tmpfs (mode 000)"
    if python != sys.executable or _python_passable():
        assert (found["applied"]["uid"], found["uid"]) == (f"on: {NOBODY}", NOBODY)
        assert found["environ"] == 13, "a non-dumpable server's environment is root's"
    else:
        print(f"uid drop off here: no Python reachable by other users ({sys.prefix} is not)")
        assert found["applied"]["uid"].startswith("off: ")
        assert found["applied"]["uid"].endswith("is not passable by other users")
    assert found["inet"] == 1
    assert found["unix"] == "allowed"
    assert found["ptrace"] == 1
    assert found["workdir"] == "written"
    assert secret.read_text() == "another tenant's model", "hidden in the worker's namespace only"


def _worker_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@ROOT_ONLY
def test_a_servers_workers_run_confined_and_still_finish_jobs(passable: Path, tmp_path: Path) -> None:
    model_file = tmp_path / "mlp.onnx"
    write_sample_model(model_file, "onnx", "mlp")
    settings = replace(
        TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", scratch_dir=str(passable / "scratch")
    )
    running = start_server(settings)
    try:
        with prunekit.Client(running.target, timeout=30, retries=0, token="", ca_file="") as client:
            model = client.upload_model(model_file)
            held = client.create_job(
                model,
                {"prune": {"method": "unstructured", "ratio": 0.5}},
                labels={FAULT_LABEL: "hang@ingest"},
            )
            worker = _wait_for_worker(held.id)
            status = _worker_status(worker)
            if _python_passable():
                assert status["Uid"].split()[:2] == [str(NOBODY), str(NOBODY)]
            else:
                print(f"uid drop off here: this Python ({sys.prefix}) is not reachable by other users")
                assert status["Uid"].split()[0] == "0"
            assert os.readlink(f"/proc/{worker}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            assert (tmp_path / "store").stat().st_mode & 0o777 == 0o700
            client.cancel_job(held.id)
            quick = {
                "prune": {"method": "unstructured", "ratio": 0.5},
                "benchmark": {"warmup": 1, "iterations": 3},
            }
            assert client.optimize(model, quick).state == job_pb2.JOB_STATE_SUCCEEDED
            assert client.analyze(model).parameters > 0
    finally:
        running.stop(grace=1.0)


def _passable_python() -> str:
    """An interpreter other users can run with its library (the system's), else this one. The probe
    needs only the standard library and :mod:`confine`."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            check = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            paths = [Path(candidate).resolve().parent, Path("/usr/lib")]
            if check.stdout.strip() == "True" and all(_passable(p) for p in paths):
                return candidate
    return sys.executable


def _passable(place: Path) -> bool:
    return all(os.stat(folder).st_mode & 0o001 for folder in [place, *place.parents])


def _python_passable() -> bool:
    paths = [Path(p) for p in sys.path if p and os.path.isdir(p)]
    return all(os.stat(f).st_mode & 0o001 for p in paths for f in [p, *p.parents])


def _wait_for_worker(job_id: str, timeout: float = 120) -> int:
    """The pid of the worker running ``job_id`` (its working directory names the job), once confined."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in descendants(os.getpid()):
            try:
                mine = job_id in os.readlink(f"/proc/{pid}/cwd")
                if mine and _worker_status(pid)["Seccomp"].strip() == "2":
                    return pid
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no confined worker of {job_id} appeared")
