"""Job leases: which server runs a job, and until when.

A job record carries ``lease{owner, expire_time}``. The server that creates a
job stamps its own lease; a server takes over a job whose lease expired with
a compare-and-swap on the record (:meth:`JobStore.mutate`), so exactly one
server wins. The owner renews every ``lease_s / 3`` seconds while the job is
queued or running there; a renewal that finds another owner (or that could
not reach storage for a whole lease) reports the job lost, and the executor
stops its worker without failing or publishing the job (the renewals are
:class:`~prunekit_server.jobs.execution.lease_keeper.LeaseKeeper`'s).
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from prunekit.v1 import job_pb2


def new_server_id(configured: str = "") -> str:
    """``configured`` when set, else ``<hostname>-<pid>-<6 random hex digits>``."""
    if configured:
        return configured
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def stamp(job: job_pb2.Job, owner: str, lease_s: float) -> None:
    """Give ``job`` to ``owner`` for ``lease_s`` seconds from now."""
    job.lease.owner = owner
    job.lease.expire_time.FromNanoseconds(time.time_ns() + int(lease_s * 1e9))


def expire_now(job: job_pb2.Job) -> None:
    """End the lease now (the owner stays named): any server may take the job over."""
    job.lease.expire_time.FromNanoseconds(time.time_ns())


def is_expired(job: job_pb2.Job, now_ns: int | None = None) -> bool:
    """True when nobody holds the job: no owner, or the lease's time has passed."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return not job.lease.owner or job.lease.expire_time.ToNanoseconds() <= now_ns
