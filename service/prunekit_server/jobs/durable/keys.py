"""Where one tenant's records live in object storage: every key the stores of this package write.

Layout, per tenant::

    tenants/<t>/models/<sha256>/model          the uploaded bytes (content-addressed)
    tenants/<t>/models/<sha256>/meta.json      its ModelRef, written after the bytes
    tenants/<t>/jobs/<id>/job.json             the Job message as JSON
    tenants/<t>/jobs/<id>/attempts/<n>/<name>  files worker start n produced
    tenants/<t>/jobs/<id>/manifest.json        the artifacts, written last and only once
    tenants/<t>/jobs/<id>/checkpoints/...      training checkpoints (see checkpoint_sync)
    tenants/<t>/job-index/<inverted-ms>-<id>   newest-first listing
    tenants/<t>/active/<id>                    jobs not yet cleaned up (what the sweeper scans)
    tenants/<t>/requests/<sha256(request_id)>  {job_id, fingerprint}: idempotent create
    tenants/<t>/datasets/...                   dataset shards (see dataset_store)
    tenants/<t>/usage.json                     bytes stored for the tenant (see usage)
    tenants/<t>/seats.json                     jobs holding an active-jobs quota seat (see seats)
    tenants/<t>/gc/{models,datasets}/<sha256>  since when an upload is unreferenced (see collect)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_MAX_MS = 10**13 - 1
TENANTS_PREFIX = "tenants/"
DEFAULT_TENANT = "default"
MODELS = "models"
DATASETS = "datasets"
"""The tenant of every caller when authentication is off."""


def is_sha256(text: str) -> bool:
    """Whether ``text`` is 64 lower-case hex digits."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class TenantKeys:
    """The object keys of one tenant's models, jobs, artifacts and datasets."""

    tenant: str

    @property
    def _root(self) -> str:
        return f"{TENANTS_PREFIX}{self.tenant}"

    @property
    def models_prefix(self) -> str:
        return f"{self._root}/models/"

    def model(self, sha256: str) -> str:
        return f"{self._root}/models/{sha256}/model"

    def model_meta(self, sha256: str) -> str:
        return f"{self._root}/models/{sha256}/meta.json"

    def job(self, job_id: str) -> str:
        return f"{self._root}/jobs/{job_id}/job.json"

    def attempts(self, job_id: str) -> str:
        return f"{self._root}/jobs/{job_id}/attempts/"

    def attempt_file(self, job_id: str, attempt: int, name: str) -> str:
        return f"{self.attempts(job_id)}{attempt}/{name}"

    def manifest(self, job_id: str) -> str:
        return f"{self._root}/jobs/{job_id}/manifest.json"

    def checkpoints(self, job_id: str) -> str:
        return f"{self._root}/jobs/{job_id}/checkpoints/"

    @property
    def index_prefix(self) -> str:
        return f"{self._root}/job-index/"

    def index_entry(self, job_id: str, create_ms: int) -> str:
        """Listing entries sort newest first: the creation time is inverted."""
        return f"{self.index_prefix}{_MAX_MS - create_ms:013d}-{job_id}"

    @property
    def active_prefix(self) -> str:
        return f"{self._root}/active/"

    def active(self, job_id: str) -> str:
        return f"{self.active_prefix}{job_id}"

    def request(self, request_id: str) -> str:
        return f"{self._root}/requests/{hashlib.sha256(request_id.encode()).hexdigest()}.json"

    @property
    def datasets_prefix(self) -> str:
        return f"{self._root}/datasets/"

    @property
    def usage(self) -> str:
        return f"{self._root}/usage.json"

    @property
    def seats(self) -> str:
        return f"{self._root}/seats.json"

    def gc_mark(self, kind: str, sha256: str) -> str:
        """``kind``: "models" or "datasets"."""
        return f"{self._root}/gc/{kind}/{sha256}"
