"""Server settings: one frozen dataclass, filled from the environment and the command line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

_GIB = 1 << 30
#: The values of ``Settings.executor`` (``PRUNEKIT_EXECUTOR``, ``--executor``).
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Settings:
    """Everything a server process is configured with.

    Each field can be set by the environment variable ``PRUNEKIT_<FIELD>`` in
    upper case (``PRUNEKIT_PORT=50051``); :meth:`from_env` reads them.
    Byte sizes and limits of 0 mean "no limit" where the field says so.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    #: ``file:///abs/dir``, a plain directory path, or ``s3://bucket/prefix``.
    storage: str = "./.prunekit-data"
    #: What runs jobs: ``local`` (worker processes of this server) or ``ray`` (tasks on the Ray cluster at
    #: ``RAY_ADDRESS``; the server is then a stateless front door, see :mod:`.jobs.ray`).
    executor: str = "local"
    #: Worker processes running jobs at the same time (analyses have as many slots again).
    workers: int = 2
    #: Jobs accepted while all workers are busy; beyond, CreateJob answers RESOURCE_EXHAUSTED.
    max_queued_jobs: int = 16
    max_upload_bytes: int = 2 * _GIB
    #: Wall-clock limit of one job's worker, in seconds.
    job_timeout_s: float = 3600.0
    #: Wall-clock limit of one analysis worker, in seconds.
    analysis_timeout_s: float = 300.0
    #: Memory of one worker, bytes: its address-space limit (RLIMIT_AS), and the budget a model's cost
    #: caps are derived from (see :mod:`.model_caps`). -1 = derived: the memory this server may use
    #: (its cgroup's limit, else the machine's RAM) less a reserve, shared by every worker that may run
    #: at once (``workers`` jobs and as many analyses). 0 = no address-space limit (use 0 with CUDA,
    #: which reserves huge address ranges, and rely on the pod's limit); the caps are derived as for -1.
    worker_memory_bytes: int = -1
    #: CPU-time limit of a worker (RLIMIT_CPU), seconds; 0 = none.
    worker_cpu_seconds: int = 4 * 3600
    #: Largest file a worker may write (RLIMIT_FSIZE), bytes; 0 = none.
    worker_file_bytes: int = 16 * _GIB
    #: Confine workers (see :mod:`.jobs.worker.confine`): a seccomp filter everywhere; where the server
    #: runs as root, a mount namespace hiding a file store's root and the uid/gid below; and the server
    #: itself non-dumpable. false = none of it.
    worker_sandbox: bool = True
    #: The uid and gid workers drop to when the server runs as root (-1 = keep root).
    worker_uid: int = 65534
    worker_gid: int = 65534
    #: Intra-op threads of each worker's torch; 0 = the CPUs this server may use divided by ``workers``,
    #: so concurrent jobs do not oversubscribe the node.
    worker_threads: int = 0
    #: Open-file limit of a worker (RLIMIT_NOFILE).
    worker_open_files: int = 1024
    #: Where workers get their scratch directories; "" = the system temp directory.
    scratch_dir: str = ""
    #: Seconds in-flight jobs get to finish after SIGTERM before they are stopped and failed.
    shutdown_grace_s: float = 30.0
    #: Least seconds between two progress writes of one job to storage.
    progress_interval_s: float = 0.5
    #: Seconds between two reads of a watched job's record from storage.
    watch_poll_s: float = 0.5
    #: Threads serving RPCs. Each upload, watch and download stream holds one while it lasts; their caps
    #: below must leave some for the unary calls (the server refuses to start otherwise).
    rpc_threads: int = 64
    #: UploadModel and UploadDataset streams received at once; beyond, RESOURCE_EXHAUSTED TOO_MANY_STREAMS.
    max_concurrent_uploads: int = 16
    #: WatchJob streams served at once; beyond, RESOURCE_EXHAUSTED TOO_MANY_STREAMS.
    max_concurrent_watches: int = 24
    #: DownloadArtifact streams served at once; beyond, RESOURCE_EXHAUSTED TOO_MANY_STREAMS.
    max_concurrent_downloads: int = 8
    #: Seconds an upload may go without a message before it is cut (DEADLINE_EXCEEDED UPLOAD_STALLED).
    upload_chunk_timeout_s: float = 60.0
    #: Seconds one upload stream may last in all before it is cut (UPLOAD_STALLED).
    upload_timeout_s: float = 3600.0
    #: Seconds a WatchJob stream lasts at most; then it ends cleanly and the SDK subscribes again.
    watch_max_s: float = 300.0
    #: Seconds between two probes of storage by the health service; a probe that fails or is not answered
    #: within that time makes ``prunekit.v1.OptimizerService`` NOT_SERVING until one succeeds. 0 = no probe.
    health_probe_s: float = 5.0
    #: Caps on a job's ``finetune`` budget (and ``steps_per_round``); beyond, INVALID_SPEC naming the field.
    max_finetune_epochs: int = 1000
    max_finetune_steps: int = 1_000_000
    max_finetune_seconds: float = 86400.0
    #: Cap on a job's ``finetune.workers`` (data-parallel ranks, Ray actors) with the ``ray``
    #: executor; the ``local`` executor allows 1.
    max_finetune_workers: int = 8
    #: How Ray places a job's ranks beyond the first: a placement group of one bundle per rank with
    #: this strategy (PACK: as few nodes as possible, SPREAD, STRICT_PACK or STRICT_SPREAD).
    ray_rank_strategy: str = "PACK"
    #: Seconds a job's start waits for Ray to place its ranks (nodes free up or are added); beyond,
    #: the start fails RANKS_UNPLACED.
    ray_rank_wait_s: float = 600.0
    #: Per-tenant quotas, 0 = none: jobs PENDING or RUNNING at once (CreateJob beyond: QUOTA_EXCEEDED),
    #: and bytes stored (uploaded models and shards, succeeded jobs' artifacts; an upload that would pass
    #: it and a CreateJob once it is reached: QUOTA_EXCEEDED). A tokens-file entry may set its own.
    quota_active_jobs: int = 0
    quota_stored_bytes: int = 0
    #: Days an ended job is kept (counted from its end); older ones are deleted like DeleteJob does.
    #: 0 = keep every job. With retention on, uploads no job references any more are removed too,
    #: once unreferenced for ``gc_grace_hours``.
    retention_days: float = 0.0
    gc_grace_hours: float = 24.0
    #: Seconds between two retention passes (each replica runs them; they are safe together).
    retention_interval_s: float = 3600.0
    #: Largest dataset shard UploadDataset accepts, bytes.
    max_dataset_upload_bytes: int = 2 * _GIB
    #: Largest total of the shards one job's ``data`` names, bytes (decoded arrays are capped alike).
    max_job_data_bytes: int = 4 * _GIB
    #: Most shards one job's ``data`` may name (prefix entries included, once expanded).
    max_job_data_shards: int = 1000
    #: This server's name in job leases; "" = hostname, process id and a random suffix.
    server_id: str = ""
    #: Seconds a job lease lasts; the owner renews it every third of that.
    lease_s: float = 30.0
    #: Seconds between two scans for jobs whose lease expired (their server is gone).
    sweep_interval_s: float = 10.0
    #: Fork each worker from a pre-started one that imported the model libraries once (faster
    #: starts); false = a fresh process per job and analysis.
    warm_workers: bool = True
    #: Worker starts charged per job: a worker killed (or out of memory) while fine-tuning is retried
    #: from its checkpoint until this many starts were charged. Restarts after infrastructure events
    #: (storage outages, fenced workers, lost leases, takeovers) are not charged.
    max_attempts: int = 3
    #: Worker starts per job in all, restarts after infrastructure events included: a bound on a job
    #: whose servers keep being lost.
    max_worker_starts: int = 20
    #: Seconds a job waits out an object-storage outage (staging its inputs, publishing its results,
    #: recording a start or its failure) before failing with STORAGE_UNAVAILABLE.
    storage_retry_s: float = 60.0
    #: "required" (default): every call needs a credential from the tokens file, the JWKS or a client
    #: certificate, and the server refuses to start with none configured. "none": no authentication,
    #: every caller is tenant "default" (a loud warning at start).
    auth: str = "required"
    #: YAML ``tokens: [{sha256: <hex>, tenant: <name>, role: user|admin}]``: static bearer tokens by digest.
    auth_tokens_file: str = ""
    #: A JWKS (JSON Web Key Set) file: bearer JWTs signed (RS256/ES256) by one of its keys are accepted.
    auth_jwks_file: str = ""
    #: The ``iss`` and ``aud`` every JWT must carry (both required with ``auth_jwks_file``).
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    #: The JWT claims naming the caller's tenant and role (role defaults to "user" when absent).
    auth_jwt_tenant_claim: str = "tenant"
    auth_jwt_role_claim: str = "role"
    #: PEM certificate chain and key of the server; set both to serve TLS only. Re-read when they change.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: PEM CA bundle: clients must present a certificate it signed (mTLS); its subject CN is the tenant.
    tls_client_ca_file: str = ""
    #: A second, plaintext port serving only grpc.health.v1 (for kubelet probes of a TLS server); -1 = none.
    health_port: int = -1
    #: Port of the Prometheus metrics endpoint (HTTP, path ``/metrics``, on ``host``); -1 = none, 0 = any.
    metrics_port: int = -1
    #: Log lines as ``text`` or ``json`` (one object per line, with job id, tenant, request id, attempt).
    log_format: str = "text"
    #: Least level logged: DEBUG, INFO, WARNING, ERROR.
    log_level: str = "INFO"
    #: Enables fault-injection hooks for the test suite. Never in production.
    enable_test_hooks: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PRUNEKIT_*`` variables, then ``overrides`` (None values ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"PRUNEKIT_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, type(getattr(cls(), f.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    def scratch_path(self) -> Path | None:
        """The scratch directory, or None for the system default."""
        return Path(self.scratch_dir) if self.scratch_dir else None


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"PRUNEKIT_{name.upper()}={raw!r} is not a valid {kind.__name__}") from exc
