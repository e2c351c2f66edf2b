"""A job's fine-tuning ranks as Ray actors (``finetune.workers`` > 1 with the ``ray`` executor).

For each worker start the job's actor reserves one bundle per rank beyond the first in a placement
group (``ray_rank_strategy``; PACK places the group on as few nodes as possible, wherever there is
room; rank 0 is not part of it), hosts the group's ``TCPStore`` on its node's address and
starts a :class:`RankActor` in each bundle. A rank actor runs ``python -m ...worker.rank`` in a scratch
directory of its own node, with a worker's allow-listed environment, sandbox and limits, and returns
its exit code. The worker, rank 0, joins through the store (:func:`..worker.ranks.join_remote`).

The placement group is the job actor's: removed after each start, and by Ray with the actor, so a
lost job leaves no reservation behind. While its group waits to be placed the job actor holds rank 0's
resources; ``ray_rank_wait_s`` bounds that wait (RANKS_UNPLACED), so two jobs that each hold part of a
full cluster cannot wait for each other for ever. A lost rank (its process killed, its node gone)
stops the start (:meth:`RayRanks.watched`; rank 0 alone would notice a node that vanished silently
only at the group's timeout) or makes rank 0's collectives fail (:meth:`RayRanks.explain`); either
way the error names the rank and how it ended, and the start is retried from the checkpoints as
after a crash of the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from ...config import Settings
from ...errors import Code, ServiceError
from ...observability.logs import configure_logging
from ..execution.sandbox import StopRequest, WorkerLimits, sandbox_task, worker_env
from ..worker.confine import protect_server
from ..worker.ranks import KILL_KEY, RANK_MODULE, host, interface_of, rank_error
from .resources import bundle, on_node

log = logging.getLogger(__name__)

#: How often a rank actor looks at its process and at the store's kill request, and the job's actor
#: at its ranks.
WATCH_S = 0.2
#: How long rank 0's lost group waits for Ray to say which rank ended and how (a lost node is told
#: by missed heartbeats, slower than a killed process).
EXPLAIN_WAIT_S = 30.0
#: How long the ranks get to exit (and remove their scratch directories) before their actors are killed.
CLOSE_WAIT_S = 10.0


class RankActor:
    """One rank of a job's fine-tuning group, on the node Ray placed it on."""

    def __init__(self, settings: Settings) -> None:
        configure_logging(settings.log_level, settings.log_format)
        if settings.worker_sandbox and not protect_server():
            log.warning("could not make the rank's Ray worker non-dumpable")
        self._settings = on_node(settings)

    def node(self) -> str:
        """The id of the Ray node this rank runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def run(self, rank: int, rendezvous: dict[str, Any], store_uri: str) -> int:
        """Run the rank's process until it exits; its exit code (negative: the signal that ended it)."""
        scratch = self._settings.scratch_path()
        workdir = Path(tempfile.mkdtemp(prefix=f"prunekit-rank{rank}-", dir=scratch))
        try:
            (workdir / "tmp").mkdir()
            task: dict[str, Any] = {"limits": WorkerLimits.from_settings(self._settings).to_dict()}
            sandbox = sandbox_task(self._settings, store_uri)
            if sandbox is not None:
                task["sandbox"] = sandbox
            path = workdir / "task.json"
            path.write_text(json.dumps(task))
            where = [str(rendezvous[k]) for k in ("world", "host", "port")]
            command = [sys.executable, "-m", RANK_MODULE, str(path), "--rank", str(rank)]
            command += ["--world", where[0], "--host", where[1], "--port", where[2]]
            command += ["--parent-pid", str(os.getpid())]
            address = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
            command += ["--interface", interface_of(address)]
            process = subprocess.Popen(command, cwd=workdir, env=worker_env(workdir))
            return _watch(process, rendezvous)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _watch(process: subprocess.Popen[bytes], rendezvous: dict[str, Any]) -> int:
    """Wait for ``process``; SIGKILL it when the group's store asks (:data:`KILL_KEY`, a test fault)."""
    from torch._C._distributed_c10d import TCPStore

    store: TCPStore | None = None
    with contextlib.suppress(RuntimeError):
        address, port = str(rendezvous["host"]), int(rendezvous["port"])
        store = TCPStore(address, port, is_master=False, timeout=timedelta(seconds=30))
    while True:
        try:
            return process.wait(timeout=WATCH_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            if store is not None and store.check([KILL_KEY]):
                process.kill()
        except RuntimeError:  # the job actor's store is gone: the start is over
            store = None


class RayRanks:
    """Ranks 1..``world``-1 of one worker start, placed by Ray (see the module's doc).

    :meth:`start` returns None when ``stop`` was set while waiting for the placement.
    """

    def __init__(self, world: int, group: Any, store: Any, rendezvous: dict[str, Any]) -> None:
        self.world = world
        self.rendezvous = rendezvous
        self._group = group
        self._store = store
        self._actors: list[Any] = []
        self._runs: list[Any] = []
        #: The Ray node ids of ranks 1..N-1, in rank order.
        self.nodes: list[str] = []

    @classmethod
    def start(
        cls, settings: Settings, world: int, resources: dict[str, Any], store_uri: str, stop: StopRequest
    ) -> RayRanks | None:
        """Place and start the other ranks of a ``world``-rank group, each with ``resources``. A rank
        actor lost while starting (its node went) raises a retried WORKER_CRASHED."""
        address = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        store = host(world, address)
        rendezvous = {"world": world, "host": address, "port": store.port, "interface": interface_of(address)}
        group = placement_group([bundle(resources)] * (world - 1), strategy=settings.ray_rank_strategy)
        ranks = cls(world, group, store, rendezvous)
        try:
            if not ranks._placed(settings.ray_rank_wait_s, stop, resources):
                ranks.close()
                return None
            for rank in range(1, world):
                strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=rank - 1)
                options = {**resources, "scheduling_strategy": strategy, "max_restarts": 0}
                remote: Any = ray.remote(RankActor).options(**options)
                ranks._actors.append(remote.remote(settings))
            ranks.nodes = [str(node) for node in ray.get([actor.node.remote() for actor in ranks._actors])]
            log.info("fine-tuning ranks 1..%d placed on Ray nodes %s", world - 1, ", ".join(ranks.nodes))
            ranks._runs = [a.run.remote(r, rendezvous, store_uri) for r, a in enumerate(ranks._actors, 1)]
        except ray.exceptions.RayActorError as exc:
            ranks.close()
            raise rank_error(len(ranks.nodes) + 1, world, -int(signal.SIGKILL)) from exc
        except BaseException:
            ranks.close()
            raise
        return ranks

    def _placed(self, wait_s: float, stop: StopRequest, resources: dict[str, Any]) -> bool:
        """Wait until the group is placed (True); False once ``stop`` is set; RANKS_UNPLACED after
        ``wait_s``."""
        started = time.monotonic()
        ready = self._group.ready()
        while not stop.is_set():
            done, _ = ray.wait([ready], timeout=1.0)
            if done:
                return True
            waited = time.monotonic() - started
            if waited > wait_s:
                message = (
                    f"Ray could not place {self.world - 1} more fine-tuning rank(s) of {bundle(resources)} "
                    f"within {wait_s:g} s (ray_rank_wait_s); ask for fewer finetune.workers or add nodes"
                )
                metadata = {"workers": str(self.world), "waited_s": f"{waited:.0f}"}
                metadata["bundle"] = json.dumps(bundle(resources))
                raise ServiceError(Code.RESOURCE_EXHAUSTED, "RANKS_UNPLACED", message, metadata=metadata)
        return False

    def _gone(self, timeout: float) -> dict[int, int]:
        """The ranks whose runs ended within ``timeout`` s, with their exit codes (SIGKILL's for a run
        whose actor, process or node, was lost)."""
        ended, _ = ray.wait(self._runs, num_returns=len(self._runs), timeout=timeout)
        gone: dict[int, int] = {}
        for rank, run in enumerate(self._runs, 1):
            if run in ended:
                try:
                    gone[rank] = int(ray.get(run))
                except ray.exceptions.RayError:
                    gone[rank] = -int(signal.SIGKILL)
        return gone

    @contextlib.contextmanager
    def watched(self, stop: StopRequest) -> Iterator[StopRequest]:
        """A stop for the start: ``stop``'s, or as soon as a rank is lost to a signal or with its actor
        or node (its error, retried from the checkpoints). Rank 0 would notice a silently lost node
        only at the group's 30-minute timeout; Ray notices it."""
        attempt, done = StopRequest(), threading.Event()

        def watch() -> None:
            while not done.wait(WATCH_S):
                if stop.is_set():
                    assert stop.error is not None
                    attempt.stop(stop.error)
                    return
                lost = {rank: code for rank, code in self._gone(0).items() if code < 0}
                if lost:
                    rank = min(lost)
                    attempt.stop(rank_error(rank, self.world, lost[rank]))
                    return

        watcher = threading.Thread(target=watch, name="rank-watch", daemon=True)
        watcher.start()
        try:
            yield attempt
        finally:
            done.set()
            watcher.join()

    def explain(self, error: ServiceError | None) -> ServiceError | None:
        """``error``, the worker's, or when it says only that rank 0 lost its group: which rank was lost
        and how (one killed by a signal or lost with its actor or node first), as
        :func:`..worker.ranks.rank_error` tells it (a signal is retried from the checkpoints)."""
        lost = error is not None and error.reason == "WORKER_CRASHED"
        if error is None or not lost or "lost_rank" in error.metadata or "signal" in error.metadata:
            return error
        gone = self._gone(EXPLAIN_WAIT_S)
        if not gone:
            return error
        rank = min(gone, key=lambda r: (gone[r] >= 0, r))
        return rank_error(rank, self.world, gone[rank])

    def kill(self) -> None:
        """SIGKILL the ranks' processes (as the test fault ``kill_rank`` does through the store)."""
        self._store.set(KILL_KEY, "1")

    def close(self) -> None:
        """Stop the ranks (their actors remove their scratch directories), then their actors; give the
        reservation back and close the store."""
        if self._runs:
            with contextlib.suppress(Exception):
                self.kill()
                ray.wait(self._runs, num_returns=len(self._runs), timeout=CLOSE_WAIT_S)
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        with contextlib.suppress(Exception):
            remove_placement_group(self._group)
        self._store = None
