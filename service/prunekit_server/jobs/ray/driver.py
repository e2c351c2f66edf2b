"""``python -m prunekit_server.jobs.ray.driver PARENT_PID``: a front door's Ray driver, its child process.

A Ray driver that loses the cluster may block for minutes or exit its process; the front door keeps
serving, so the driver runs here and :class:`.bridge.RayBridge` restarts it; it dies with the front
door (``PR_SET_PDEATHSIG``). ``address`` may name the head's control store (``host:6379``, from a node
of the cluster) or its Ray Client server (``ray://host:10001``, from anywhere). It reads one JSON line of
configuration from stdin (``address``, ``settings``), connects, writes ``{"ready": true}``, then
answers one JSON request line at a time on its stdout (its other output goes to stderr):

* ``{"op": "ping"}``: the cluster's CPU count (a call to Ray's control store).
* ``{"op": "submit", "job_id", "tenant", "resources"}``: the job's actor, created unless it exists;
  ``created`` says whether it was (a job whose actor exists runs on, whatever its record's lease).
* ``{"op": "cancel", "job_id"}``: the job's actor killed without restart; ``found`` says if it was there.

Each answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import IO, Any

import ray

from ...config import Settings
from ..worker.main import die_with_parent
from .actor import job_actor
from .resources import NAMESPACE, actor_name


def _submit(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    job_id = str(request["job_id"])
    options = {
        **request["resources"],
        "name": actor_name(job_id),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": max(0, settings.max_attempts - 1),
    }
    try:
        ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
        return {"created": False}  # placed or waiting for resources: Ray runs it
    except ValueError:
        pass
    job_actor(options).remote(job_id, str(request["tenant"]), settings)  # get_if_exists: races are safe
    return {"created": True}


def _cancel(request: dict[str, Any]) -> dict[str, Any]:
    try:
        actor = ray.get_actor(actor_name(str(request["job_id"])), namespace=NAMESPACE)
    except ValueError:
        return {"found": False}
    ray.kill(actor, no_restart=True)
    return {"found": True}


def answer(settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request (see the module's doc)."""
    op = request.get("op")
    try:
        if op == "ping":
            return {"ok": True, "cpus": ray.cluster_resources().get("CPU", 0)}  # type: ignore[no-untyped-call]
        if op == "submit":
            return {"ok": True, **_submit(settings, request)}
        if op == "cancel":
            return {"ok": True, **_cancel(request)}
        return {"ok": False, "error": f"unknown op {op!r}"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _write(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def main() -> int:
    if len(sys.argv) > 1:
        die_with_parent(int(sys.argv[1]))
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # Ray's own output must not reach the answers
    config = json.loads(sys.stdin.readline())
    settings = Settings(**config["settings"])
    ray.init(
        address=config["address"], namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING
    )
    _write(channel, {"ready": True})
    for line in sys.stdin:
        _write(channel, answer(settings, json.loads(line)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
