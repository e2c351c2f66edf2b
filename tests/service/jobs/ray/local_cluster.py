"""A real, local Ray cluster for tests: its nodes started by a holder process, stopped with it.

``python -m tests.service.jobs.ray.local_cluster CPUS NODES TEMP_DIR`` starts a head node and
NODES - 1 worker nodes of CPUS CPUs each (separate raylets on this machine, as Ray's own multi-node
tests run them) and prints the head's address; each stdin line ``remove`` kills the newest worker
node, ``add`` starts one more (each answered ``done``); it stops every node (each process, detached
actors included) when its stdin closes. :func:`ray_cluster` runs it for a ``with`` block.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: What Ray's processes in tests are started with: no usage report, no token (a cluster of one machine).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


class LocalCluster:
    """A running local cluster: its head's ``address``; worker nodes can be removed and added."""

    def __init__(self, address: str, proc: subprocess.Popen[str]) -> None:
        self.address = address
        self._proc = proc

    def _ask(self, command: str) -> None:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        assert self._proc.stdout.readline().strip() == "done", f"the cluster did not {command} a node"

    def remove_node(self) -> None:
        """Kill the newest worker node and every process on it, as a lost machine."""
        self._ask("remove")

    def add_node(self) -> None:
        """Start one more worker node, as an autoscaler would."""
        self._ask("add")


@contextmanager
def ray_cluster(cpus: int = 2, nodes: int = 1) -> Iterator[LocalCluster]:
    """A local Ray cluster of ``nodes`` nodes with ``cpus`` CPUs each, for the block's time."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    command = [sys.executable, "-m", "tests.service.jobs.ray.local_cluster", str(cpus), str(nodes), temp]
    env = {**os.environ, **RAY_ENV}
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield LocalCluster(address, proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def local_ray(cpus: int = 2, nodes: int = 1) -> Iterator[str]:
    """The address (``host:port``) of a :func:`ray_cluster`'s head, for the block's time."""
    with ray_cluster(cpus, nodes) as cluster:
        yield cluster.address


def _hold(cpus: int, nodes: int, temp: str) -> None:
    from ray.cluster_utils import Cluster

    args = {"num_cpus": cpus, "include_dashboard": False, "temp_dir": temp}
    cluster = Cluster(initialize_head=True, head_node_args=args)
    workers = [cluster.add_node(num_cpus=cpus) for _ in range(nodes - 1)]
    print(cluster.address, flush=True)
    for line in sys.stdin:
        if line.strip() == "remove" and workers:
            cluster.remove_node(workers.pop(), allow_graceful=False)
        elif line.strip() == "add":
            workers.append(cluster.add_node(num_cpus=cpus))
        print("done", flush=True)
    cluster.shutdown()


if __name__ == "__main__":
    _hold(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
