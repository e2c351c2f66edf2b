"""Which worker failures are retried (charged or not), which are the memory running out, and the
fault-injection label of the test suite."""

from __future__ import annotations

import errno
from typing import Any

from ...errors import Code, ServiceError
from .fence import EXIT_FENCED

#: Label that injects a worker fault, honoured only with ``enable_test_hooks``: "ACTION@STAGE"
#: (first worker start only), "ACTION@STAGE#N" (start N only) or "ACTION@STAGE#*" (every start).
#: STAGE "checkpoint" fires right after the worker announced a checkpoint. Actions: segfault,
#: exit, hang, memory, sigkill, kill_rank (SIGKILL the fine-tuning ranks; see
#: ``worker.ProgressWriter``). The ``ray`` executor's front door also honours
#: :data:`~..ray.executor.UNSUBMITTED` (it writes the record and does not hand the job on).
FAULT_LABEL = "prunekit.dev/test-fault"
_RETRIED_REASONS = frozenset({"WORKER_CRASHED", "WORKER_OUT_OF_MEMORY"})
#: Exit codes of a worker (and of a fine-tuning rank) whose task raised: a service error (its verdict),
#: an allocation that failed, anything else (a bug).
EXIT_SERVICE_ERROR = 3
EXIT_OUT_OF_MEMORY = 4
EXIT_BUG = 5


def parse_fault(label: str) -> dict[str, Any] | None:
    """The fault a FAULT_LABEL value asks for, ``{action, stage, attempt}`` (attempt 0: every
    start), or None."""
    if "@" not in label:
        return None
    action, rest = label.split("@", 1)
    stage, _, which = rest.partition("#")
    attempt = 0 if which == "*" else int(which) if which.isdigit() else 1
    return {"action": action, "stage": stage, "attempt": attempt}


def is_fenced(error: ServiceError) -> bool:
    """The worker stopped itself because its server's lease renewals stopped reaching it (see
    :mod:`.fence`): an infrastructure event (a storage outage, a starved or frozen server), at any
    stage. The job starts again without it being charged against ``max_attempts``."""
    return error.reason == "WORKER_CRASHED" and error.metadata.get("exit_code") == str(EXIT_FENCED)


def is_retryable(error: ServiceError) -> bool:
    """A worker killed by a signal (crash, out of memory) during stage "finetune": it resumes from its
    checkpoint, charged against ``max_attempts``. A crash while parsing or pruning the model is the
    model's doing, a service error (exit 3) is a verdict, and hitting the file-size limit (SIGXFSZ)
    would happen again: none is retried."""
    signalled = "signal" in error.metadata and error.metadata["signal"] != "SIGXFSZ"
    return error.reason in _RETRIED_REASONS and signalled and error.metadata.get("stage") == "finetune"


_OUT_OF_MEMORY_TEXT = (
    "failed to allocate memory",  # ONNX Runtime's allocators and arenas
    "bad_alloc",
    "out of memory",  # CUDA, cuBLAS, cuDNN
    "alloc_failed",
    "can't allocate memory",  # torch's CPU allocator
    "cannot allocate memory",
    "not enough memory",
)


def allocation_failure(exc: BaseException | None) -> str | None:
    """What failed to allocate when ``exc``, or an exception it was raised from, is an allocation that
    failed ("" when nothing more is known); None when it is not.

    Native runtimes do not raise MemoryError: ONNX Runtime raises its RuntimeException ("Failed to
    allocate memory for requested buffer of size N"), torch a RuntimeError; they are told by their messages.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return ""
        text = " ".join(str(exc).split())
        found = [text.lower().find(t) for t in _OUT_OF_MEMORY_TEXT]
        at = min((i for i in found if i >= 0), default=-1)
        if at >= 0 and not isinstance(exc, ServiceError):
            return text[at : at + 160]
        exc = exc.__cause__ or exc.__context__
    return None


def out_of_memory(detail: str = "") -> ServiceError:
    """WORKER_OUT_OF_MEMORY, with what failed to allocate when known."""
    hint = "raise PRUNEKIT_WORKER_MEMORY_BYTES or use smaller inputs"
    return ServiceError(
        Code.RESOURCE_EXHAUSTED,
        "WORKER_OUT_OF_MEMORY",
        f"the worker ran out of memory{f' ({detail})' if detail else ''}; {hint}",
    )
