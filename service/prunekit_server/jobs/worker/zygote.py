"""The warm worker ("zygote"): model libraries imported once, a forked child per task.

``python -m prunekit_server.jobs.worker.zygote --control-fd N --worker-module M``
(its children show that command line, worker module included), started by the
server (:mod:`..execution.warm`) in the sandbox's environment. It imports
torch, onnx, the pipeline and the worker once (ONNX Runtime lazily: its
import starts a thread), checks it runs no thread but its own, then waits on
the control socket (``SOCK_SEQPACKET``). Each request is a JSON record with
four file descriptors (``SCM_RIGHTS``): a reply socket, the progress pipe,
the worker's stdin (the heartbeat pipe or ``/dev/null``) and its log file.
The zygote forks; the child becomes exactly the worker a fresh process would
be (:func:`_become_worker`): its own session, the request's environment and
working directory, then :func:`.main.main` (death signal, fence, rlimits,
thread counts, the task, the exit code) of ``M``, :mod:`.main`. The zygote answers ``{"pid": P}``
on the reply socket, then ``{"exit": CODE}`` once it has reaped the child
(``CODE`` as :attr:`subprocess.Popen.returncode`: negative for a signal).
EOF on the control socket means the server is gone: the zygote kills its
children's process groups, removes its scratch home and exits. Its
children die with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import random
import select
import shutil
import signal
import socket
import sys
import tempfile
import traceback
import types
from typing import Any

EXIT_NOT_FORK_SAFE = 7
"""The zygote found a thread besides its own after importing: it must not fork, the server falls back."""

_LAZY = ("onnxruntime",)


def preload() -> None:
    """Import what every task needs; ONNX Runtime is bound lazily (its import starts a thread).

    torch first: its import looks at every loaded module's ``__file__``, which would load a lazy one.
    """
    import onnx  # noqa: F401
    import torch  # noqa: F401

    for name in _LAZY:
        _defer(name)
    from google.protobuf import json_format  # noqa: F401

    from prunekit.v1 import model_pb2, spec_pb2  # noqa: F401

    from ... import pipeline  # noqa: F401
    from . import main  # noqa: F401


class _Deferred(types.ModuleType):
    """Stands for a module not imported yet; the first missing attribute imports it for real."""

    def __getattr__(self, attr: str) -> Any:
        real = sys.modules.get(self.__name__)
        if real is self or real is None:
            sys.modules.pop(self.__name__, None)
            real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _defer(name: str) -> None:
    """Put a :class:`_Deferred` for ``name`` in ``sys.modules`` (``import name`` binds it, loads nothing)."""
    spec = importlib.util.find_spec(name)
    if spec is None or name in sys.modules:
        return
    module = _Deferred(name)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__loader__ = spec.loader
    module.__package__ = name
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module


def thread_count() -> int:
    """Threads of this process (Linux), 1 where it cannot tell."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


class Zygote:
    """The zygote's loop: requests in, forked workers out, exit codes back."""

    def __init__(self, control: socket.socket, worker_module: str) -> None:
        self.control = control
        self.worker_module = worker_module
        self.replies: dict[int, socket.socket] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def serve(self) -> int:
        while True:
            ready = select.select([self.control.fileno(), self.wake_r], [], [])[0]
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            self.reap()
            if self.control.fileno() in ready:
                message, fds, _, _ = socket.recv_fds(self.control, 1 << 20, 8)
                if not message:
                    self.kill_children()
                    return 0
                self.start(message, fds)

    def start(self, message: bytes, fds: list[int]) -> None:
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            return
        reply = socket.socket(fileno=fds[0])
        if thread_count() != 1 or select.select([reply], [], [], 0)[0]:
            _send(reply, {"error": "not fork-safe" if thread_count() != 1 else "gone"})
            reply.close()
            for fd in fds[1:]:
                os.close(fd)
            return
        request = json.loads(message)
        zygote_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 5
            try:
                code = self._child(request, fds, zygote_pid)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in fds[1:]:
            os.close(fd)
        if not _send(reply, {"pid": pid}):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        self.replies[pid] = reply

    def _child(self, request: dict[str, Any], fds: list[int], zygote_pid: int) -> int:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for sock in (self.control, *self.replies.values()):
            sock.close()
        for fd in (self.wake_r, self.wake_w, fds[0]):
            os.close(fd)
        progress = _become_worker(request, stdin=fds[2], log=fds[3], progress=fds[1])
        main = importlib.import_module(self.worker_module).main
        argv = [str(request["task"]), "--progress-fd", str(progress), "--parent-pid", str(zygote_pid)]
        code: int = main([*argv, "--fence-s", str(float(request.get("fence_s", 0.0)))])
        return code

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            reply = self.replies.pop(pid, None)
            if reply is not None:
                _send(reply, {"exit": os.waitstatus_to_exitcode(status)})
                reply.close()

    def kill_children(self) -> None:
        for pid in self.replies:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def _become_worker(request: dict[str, Any], *, stdin: int, log: int, progress: int) -> int:
    """Turn this forked child into the worker a fresh process would be; returns the progress fd."""
    os.setsid()
    os.dup2(stdin, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in (stdin, log):
        if fd > 2:
            os.close(fd)
    if progress <= 2:
        progress = os.dup(progress)
    os.chdir(str(request["cwd"]))
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})
    tempfile.tempdir = None
    random.seed()
    _reseed_and_size_libraries()
    return progress


def _reseed_and_size_libraries() -> None:
    """Fresh RNG states (a fork copies the zygote's) and BLAS threads as a fresh worker's."""
    import numpy as np
    import torch

    from .threads import worker_threads

    np.random.seed()
    torch.seed()
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,import-not-found,unused-ignore]

        threadpool_limits(limits=worker_threads(), user_api="blas")


def _send(sock: socket.socket, body: dict[str, Any]) -> bool:
    try:
        sock.send(json.dumps(body).encode())
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prunekit-zygote")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--worker-module", default="prunekit_server.jobs.worker.main")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    preload()
    if thread_count() != 1:
        print(f"prunekit zygote: {thread_count()} threads after imports; not forking", file=sys.stderr)
        return EXIT_NOT_FORK_SAFE
    code = Zygote(control, args.worker_module).serve()
    home = os.getcwd()
    if os.path.basename(home).startswith("prunekit-zygote-"):  # its server is gone: nobody else will
        shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
