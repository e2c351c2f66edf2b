"""The worker process: it dies with its server, and its fault hooks fire on the asked start only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunekit_server.errors import Code, ServiceError
from prunekit_server.jobs.worker.faults import is_retryable, parse_fault

_FAULTY = """
import io, sys
from prunekit_server.jobs.worker.main import ProgressWriter
fault = {"action": "sigkill", "stage": "checkpoint", "attempt": int(sys.argv[1])}
progress = ProgressWriter(io.StringIO(), fault, attempt=int(sys.argv[2]))
progress("finetune", 0.5, "step 10", {"finetune": {"step": 10}})
announced = {"phase": "finetune", "name": "ckpt-00000010", "step": 10}
progress("finetune", 0.5, "checkpoint", {"checkpoint": announced})
"""

_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(120)
"""

_CHILD = """
import os, time
parent = os.getppid()
from prunekit_server.jobs.worker.main import die_with_parent
assert die_with_parent(parent)
print("armed", flush=True)
time.sleep(120)
"""


def test_fault_labels() -> None:
    assert parse_fault("segfault@ingest") == {"action": "segfault", "stage": "ingest", "attempt": 1}
    assert parse_fault("sigkill@checkpoint#2") == {"action": "sigkill", "stage": "checkpoint", "attempt": 2}
    assert parse_fault("exit@prune#*") == {"action": "exit", "stage": "prune", "attempt": 0}
    assert parse_fault("nothing") is None


@pytest.mark.parametrize(("wanted", "attempt", "killed"), [(1, 1, True), (1, 2, False), (0, 3, True)])
def test_sigkill_at_checkpoint_fires_on_the_asked_start(wanted: int, attempt: int, killed: bool) -> None:
    done = subprocess.run([sys.executable, "-c", _FAULTY, str(wanted), str(attempt)], timeout=60, check=False)
    assert done.returncode == (-signal.SIGKILL if killed else 0)


def test_only_signal_deaths_while_finetuning_are_retried() -> None:
    def crash(stage: str, **meta: str) -> ServiceError:
        return ServiceError(Code.INTERNAL, "WORKER_CRASHED", "died", metadata={"stage": stage, **meta})

    assert is_retryable(crash("finetune", signal="SIGKILL"))
    assert not is_retryable(
        ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "WORKER_OUT_OF_MEMORY",
            "x",
            metadata={"stage": "finetune", "signal": "SIGXFSZ"},
        )
    ), "the file-size limit is hit again on every retry"
    assert is_retryable(
        ServiceError(
            Code.RESOURCE_EXHAUSTED,
            "WORKER_OUT_OF_MEMORY",
            "x",
            metadata={"stage": "finetune", "signal": "SIGKILL"},
        )
    )
    assert not is_retryable(crash("ingest", signal="SIGSEGV"))
    assert not is_retryable(crash("finetune", exit_code="17"))
    assert not is_retryable(
        ServiceError(Code.INVALID_ARGUMENT, "INVALID_DATASET", "bad", metadata={"stage": "finetune"})
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_worker_dies_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _CHILD], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "armed"  # the import can take seconds on a busy machine
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in {"Z", "X"}
