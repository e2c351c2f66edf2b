"""The :class:`~...training.replicas.Replicas` of a ``torch.distributed`` process group.

:class:`GroupReplicas` wraps the default process group of this process (``gloo``: its collectives
run on CPU and on CUDA tensors alike). :func:`join` makes that group from a ``TCPStore``: rank 0
hosts the store (port 0: the kernel picks one), the other ranks connect to it. Every socket of the
group is made while joining, so a worker joins before its sandbox (:mod:`.confine`) forbids new
IPv4/IPv6 sockets, and its collectives then run on the connections it already has.
:func:`start_ranks` starts a worker's other ranks (:mod:`.rank`) and joins their group as rank 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
from torch import distributed
from torch._C._distributed_c10d import TCPStore

T = TypeVar("T")

__all__ = ["GroupReplicas", "Ranks", "join", "start_ranks"]

#: How long a collective (or joining) waits for the other ranks before it raises.
GROUP_TIMEOUT = timedelta(minutes=30)


class GroupReplicas:
    """This process's rank in the default ``torch.distributed`` group."""

    def __init__(self) -> None:
        self._rank, self._world = distributed.get_rank(), distributed.get_world_size()

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
            distributed.all_reduce(flat)
            flat /= self._world
            offset = 0
            for t in group:
                t.detach().copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def share(self, value: T) -> T:
        box: list[object] = [value if self._rank == 0 else None]
        distributed.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def any(self, flag: bool) -> bool:
        found = torch.tensor([1 if flag else 0], dtype=torch.int32)
        distributed.all_reduce(found, op=distributed.ReduceOp.MAX)
        return bool(found.item())

    def leave(self) -> None:
        """Leave the group (every rank calls it)."""
        distributed.destroy_process_group()


def host(world: int) -> TCPStore:
    """Rank 0's store of a group of ``world`` ranks on this machine's loopback (its port: ``.port``)."""
    return TCPStore("127.0.0.1", 0, world, is_master=True, timeout=GROUP_TIMEOUT, wait_for_workers=False)


def join(rank: int, world: int, store: TCPStore | None = None, port: int = 0) -> GroupReplicas:
    """Join the ``gloo`` group of ``world`` ranks as ``rank``: rank 0 with the ``store`` it hosts
    (:func:`host`), the others through the store's loopback ``port``."""
    if store is None:
        store = TCPStore("127.0.0.1", port, world, is_master=False, timeout=GROUP_TIMEOUT)
    distributed.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=GROUP_TIMEOUT)
    return GroupReplicas()


RANK_MODULE = "prunekit_server.jobs.worker.rank"


@dataclass
class Ranks:
    """Rank 0's group and the processes of the other ranks."""

    replicas: GroupReplicas
    processes: list[subprocess.Popen[bytes]]

    def release(self) -> None:
        """Tell the other ranks there is no more work, leave the group, wait for them to exit."""
        self.replicas.share(None)
        self.replicas.leave()
        for process in self.processes:
            process.wait(timeout=60)


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
    return Ranks(join(0, world, store=store), processes)
