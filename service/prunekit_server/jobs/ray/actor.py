"""The job's Ray actor: created (once, by name) by a front door's driver, it runs the job on a thread.

The actor's constructor starts :func:`.task.run_job`, so a restart by Ray (the actor's process or node
was lost; at most ``max_attempts`` restarts) runs the job again from its checkpoints with no front
door involved. When the run ends the actor kills itself without restart. CancelJob kills it from a
front door; its worker process dies with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from ...config import Settings
from ...observability.logs import configure_logging
from ..execution.sandbox import StopRequest
from ..worker.confine import protect_server
from .task import run_job

log = logging.getLogger(__name__)


class JobActor:
    """Runs one job; its Ray name is :func:`.resources.actor_name` of the job's id (see :mod:`.driver`)."""

    def __init__(self, job_id: str, tenant: str, settings: Settings) -> None:
        configure_logging(settings.log_level, settings.log_format)
        if settings.worker_sandbox and not protect_server():
            log.warning("could not make the job's Ray worker non-dumpable")
        self._stop = StopRequest()
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._thread = threading.Thread(
            target=self._run, args=(settings, job_id, tenant, restarted), name=f"job-{job_id}", daemon=True
        )
        self._thread.start()

    def _run(self, settings: Settings, job_id: str, tenant: str, restarted: bool) -> None:
        try:
            run_job(settings, job_id, tenant, self._stop, restarted=restarted)
        except Exception:
            log.exception("job %s: its run on Ray failed; the front doors' scan hands it on again", job_id)
        finally:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def job_actor(options: dict[str, Any]) -> Any:
    """The remote class of :class:`JobActor` with ``options`` (resources, name, restarts)."""
    return ray.remote(JobActor).options(**options)
