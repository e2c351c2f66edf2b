"""The :class:`~...training.replicas.Replicas` of a ``torch.distributed`` process group.

:class:`GroupReplicas` wraps the default process group of this process (``gloo``: its collectives
run on CPU and on CUDA tensors alike). :func:`join` makes that group from a ``TCPStore``: its host
(:func:`host`; port 0: the kernel picks one) is rank 0 on one machine, or the job's Ray actor when
the ranks are Ray actors on several nodes (:mod:`..ray.ranks`); the ranks connect to it. Every socket
of the group is made while joining, so a worker joins before its sandbox (:mod:`.confine`) forbids
new IPv4/IPv6 sockets, and its collectives then run on the connections it already has.
:func:`start_ranks` starts a worker's other ranks (:mod:`.rank`) on its machine and joins their group
as rank 0; :func:`join_remote` joins as rank 0 a group whose other ranks were placed by Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
from torch import distributed
from torch._C._distributed_c10d import TCPStore

from ...errors import Code, ServiceError
from .faults import EXIT_OUT_OF_MEMORY, out_of_memory

T = TypeVar("T")

__all__ = ["KILL_KEY", "GroupReplicas", "Ranks", "exit_now", "join", "join_remote", "start_ranks"]

#: How long a collective (or joining) waits for the other ranks before it raises.
GROUP_TIMEOUT = timedelta(minutes=30)
#: How long a failed collective waits for the process of the rank that broke it to be seen exiting,
#: and then for the ranks that failed in turn.
EXIT_GRACE_S = 5.0
SETTLE_S = 0.5
_SIOCGIFADDR = 0x8915
#: The store key that asks the job's Ray actor to SIGKILL the ranks it placed (test fault ``kill_rank``).
KILL_KEY = "prunekit/kill_ranks"


class GroupReplicas:
    """This process's rank in the default ``torch.distributed`` group; ``peers``, rank 0's processes
    of ranks 1..N-1, name the rank that was lost when a collective fails.

    A collective that fails (a rank died, its connection closed) raises a WORKER_CRASHED
    :class:`~...errors.ServiceError` of stage "finetune"; when a peer was killed by a signal the error
    carries it, so the job starts again from its checkpoints like after a crash of the worker itself
    (:func:`.faults.is_retryable`); see :func:`rank_error`. A rank killed by a signal is named before
    the ranks whose collectives failed because of it.
    """

    def __init__(self, peers: Sequence[subprocess.Popen[bytes]] = ()) -> None:
        self._rank, self._world = distributed.get_rank(), distributed.get_world_size()
        self._peers = list(peers)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world(self) -> int:
        return self._world

    def average(self, tensors: list[torch.Tensor]) -> None:
        """In-place mean over the ranks: one all-reduce of the tensors flattened together (per dtype)."""
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            with self._collective():
                distributed.all_reduce(flat)
            flat /= self._world
            offset = 0
            for t in group:
                t.detach().copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def share(self, value: T) -> T:
        box: list[object] = [value if self._rank == 0 else None]
        with self._collective():
            distributed.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def any(self, flag: bool) -> bool:
        found = torch.tensor([1 if flag else 0], dtype=torch.int32)
        with self._collective():
            distributed.all_reduce(found, op=distributed.ReduceOp.MAX)
        return bool(found.item())

    @contextmanager
    def _collective(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:  # gloo's errors (DistBackendError, closed connections)
            raise self._lost(exc) from exc

    def _lost(self, exc: RuntimeError) -> ServiceError:
        deadline = time.monotonic() + EXIT_GRACE_S
        while self._peers and time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._peers):
                time.sleep(SETTLE_S)  # ranks that failed because another one died exit just after it
                gone = {rank: p.returncode for rank, p in enumerate(self._peers, 1) if p.poll() is not None}
                rank = min(gone, key=lambda r: (gone[r] >= 0, r))  # one killed by a signal, first
                return rank_error(rank, self._world, gone[rank])
            time.sleep(0.05)
        message = f"fine-tuning rank {self._rank} of {self._world} lost its group: {str(exc)[:300]}"
        return ServiceError(Code.INTERNAL, "WORKER_CRASHED", message, metadata={"stage": "finetune"})

    def leave(self) -> None:
        """Leave the group (every rank calls it)."""
        distributed.destroy_process_group()


def rank_error(rank: int, world: int, code: int) -> ServiceError:
    """What rank ``rank`` of ``world`` exiting with ``code`` (negative: a signal) means for the start, as
    :func:`..execution.worker_exit.outcome_error` reads a worker's exit: a signal is a crash (retried
    from the checkpoint, :func:`.faults.is_retryable`) but the CPU-time limit (a timeout); the
    out-of-memory exit is WORKER_OUT_OF_MEMORY; another code the rank's own failure (not retried)."""
    meta = {"stage": "finetune", "lost_rank": str(rank), "rank_exit_code": str(code)}
    who = f"fine-tuning rank {rank} of {world}"
    if code == EXIT_OUT_OF_MEMORY:
        error = out_of_memory(who)
        return ServiceError(error.code, error.reason, error.message, metadata=meta)
    if code >= 0:
        return ServiceError(Code.INTERNAL, "WORKER_CRASHED", f"{who} exited with code {code}", metadata=meta)
    meta["signal"] = signal.Signals(-code).name
    if -code == signal.SIGXCPU:
        message = f"{who} used up its CPU-time limit"
        return ServiceError(Code.DEADLINE_EXCEEDED, "WORKER_TIMEOUT", message, metadata=meta)
    return ServiceError(Code.INTERNAL, "WORKER_CRASHED", f"{who} died of {meta['signal']}", metadata=meta)


def host(world: int, address: str = "127.0.0.1") -> TCPStore:
    """The store of a group of ``world`` ranks, listening on ``address`` (its port: ``.port``)."""
    return TCPStore(address, 0, world, is_master=True, timeout=GROUP_TIMEOUT, wait_for_workers=False)


def interface_of(address: str) -> str:
    """The name of this machine's network interface with the IPv4 ``address`` ("" when none has it,
    or off Linux); ``GLOO_SOCKET_IFNAME`` of the node's environment wins."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return os.environ["GLOO_SOCKET_IFNAME"]
    try:
        import fcntl
    except ImportError:
        return ""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address
                continue
        if socket.inet_ntoa(packed[20:24]) == address:
            return name
    return ""


def join(
    rank: int,
    world: int,
    store: TCPStore | None = None,
    port: int = 0,
    peers: Sequence[subprocess.Popen[bytes]] = (),
    address: str = "127.0.0.1",
    interface: str = "",
) -> GroupReplicas:
    """Join the ``gloo`` group of ``world`` ranks as ``rank``: with the ``store`` this process hosts
    (:func:`host`) and the ``peers`` it started, or through the store at ``address``:``port``.
    ``interface`` names the network interface gloo's connections use (else that of the hostname)."""
    if interface:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    if store is None:
        store = TCPStore(address, port, world, is_master=False, timeout=GROUP_TIMEOUT)
    distributed.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=GROUP_TIMEOUT)
    return GroupReplicas(peers)


RANK_MODULE = "prunekit_server.jobs.worker.rank"


@dataclass
class Ranks:
    """Rank 0's group and the processes of the other ranks (none when Ray placed them: ``store``,
    the job actor's, then reaches them)."""

    replicas: GroupReplicas
    processes: list[subprocess.Popen[bytes]]
    store: TCPStore | None = None

    def kill(self) -> None:
        """SIGKILL the other ranks (test fault ``kill_rank``): this worker's processes, or those of
        the Ray actors, through the store (:data:`KILL_KEY`)."""
        for process in self.processes:
            process.kill()
        if self.store is not None:
            self.store.set(KILL_KEY, "1")

    def release(self, code: int) -> NoReturn:
        """End this worker with exit ``code``: tell the other ranks there is no more work when the
        work succeeded (else stop this machine's ranks), wait for this machine's ranks to exit (a
        rank lost once the work is done costs the job nothing), and exit without tearing the group
        down (:func:`exit_now`). Ray's ranks stop with their job actor's start."""
        if code == 0:
            with contextlib.suppress(ServiceError):
                self.replicas.share(None)
        for process in self.processes:
            if code != 0:
                process.kill()  # waiting for work that will not come
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Exit at once with ``code`` once stdout and stderr are flushed. A process in a gloo group ends
    so: tearing the group down (or letting the interpreter do it) while the peers hang up can end in
    ``std::terminate`` (SIGABRT, "terminate called without an active exception"), which would turn a
    finished job into a crashed one; the kernel closes the group's sockets all the same."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _rank_env(rank: int) -> dict[str, str]:
    env = dict(os.environ)
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if len(visible) > 1:
        env["CUDA_VISIBLE_DEVICES"] = visible[rank % len(visible)]
    return env


def start_ranks(task_path: Path, world: int) -> Ranks:
    """Start ranks 1..``world``-1 for the task at ``task_path`` and join their group as rank 0."""
    store = host(world)
    where = ["--world", str(world), "--port", str(store.port), "--parent-pid", str(os.getpid())]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", RANK_MODULE, str(task_path), "--rank", str(rank), *where],
            env=_rank_env(rank),
        )
        for rank in range(1, world)
    ]
    return Ranks(join(0, world, store=store, peers=processes), processes)


def join_remote(rendezvous: Mapping[str, Any]) -> Ranks:
    """Join as rank 0 the group of ``rendezvous`` (``world``, ``host``, ``port``, ``interface``): its
    store is the job's Ray actor's, its other ranks Ray actors (:mod:`..ray.ranks`)."""
    world, address, port = int(rendezvous["world"]), str(rendezvous["host"]), int(rendezvous["port"])
    store = TCPStore(address, port, world, is_master=False, timeout=GROUP_TIMEOUT)
    return Ranks(join(0, world, store=store, interface=str(rendezvous.get("interface", ""))), [], store)
