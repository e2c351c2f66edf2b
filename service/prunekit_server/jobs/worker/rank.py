"""A fine-tuning rank of a job (``finetune.workers`` > 1): ``python -m prunekit_server.jobs.worker.rank``.

The worker (rank 0) starts them (:func:`.ranks.start_ranks`) before it enters its sandbox: it hosts a
``TCPStore`` on loopback, starts ranks 1..N-1 as processes of its own (same allow-listed environment:
no storage credentials; one GPU each when several are visible) and joins the ``gloo`` group with them.
Each rank joins the group, then enters the same sandbox as the worker (so no socket is made after)
and follows rank 0: it receives each fine-tuning run (:class:`~...training.replicas.RankWork`: the
converted model, the teacher, the data, the config) and trains its shard of every batch, until rank 0
sends None. Only rank 0 reads the job's files, reports progress and writes checkpoints and results; a
rank dies with the worker (``PR_SET_PDEATHSIG``), and the worker's collectives fail when a rank dies,
so the start fails and the job resumes from its checkpoints as after any worker crash.

With the ``ray`` executor a rank is started the same way by a Ray actor of its own, possibly on
another node (:mod:`..ray.ranks`), and joins through the job actor's store at ``--host``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ...training.finetune import finetune
from ...training.replicas import RankWork
from .confine import confine
from .main import apply_limits, die_with_parent, task_failure
from .ranks import GroupReplicas, exit_now, join
from .threads import configure_torch, worker_threads


def follow(replicas: GroupReplicas) -> None:
    """Train every run rank 0 hands out, until it hands out None (the rank then exits without tearing
    the group down, see :func:`.ranks.exit_now`)."""
    while (work := replicas.share(None)) is not None:
        assert isinstance(work, RankWork)
        finetune(
            work.student,
            work.teacher,
            work.train,
            work.eval,
            work.config,
            features=work.features,
            masks=work.masks,
            fixed_batch=work.fixed_batch,
            replicas=replicas,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prunekit-rank")
    parser.add_argument("task", type=Path)
    for flag in ("--rank", "--world", "--port", "--parent-pid"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--interface", default="")
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    task: dict[str, Any] = json.loads(args.task.read_text())
    replicas = join(args.rank, args.world, port=args.port, address=args.host, interface=args.interface)
    if isinstance(task.get("sandbox"), dict):
        confine(task["sandbox"], args.task.parent)
        die_with_parent(args.parent_pid)
    apply_limits(task.get("limits", {}))
    configure_torch(int(task.get("limits", {}).get("threads", 0)) or worker_threads())
    try:
        follow(replicas)
    except Exception as exc:  # its exit code tells rank 0 what happened (:func:`.ranks.rank_error`)
        exit_now(task_failure(exc)[1])
    exit_now(0)


if __name__ == "__main__":
    sys.exit(main())
