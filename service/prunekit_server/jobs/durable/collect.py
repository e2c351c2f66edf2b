"""Removing uploaded models and dataset shards that no job of their tenant references any more.

A pass reads every job record of the tenant (the model's sha256 and every ``data`` entry of its spec)
and then each upload (``models/<sha256>/``, ``datasets/<sha256>/``). An unreferenced upload gets a mark
(``gc/<kind>/<sha256>``, holding the time it was first seen so); once it has stayed unreferenced for
the grace period it is removed: meta first (it is then unknown to every RPC), then the bytes, which
are taken off the tenant's stored bytes. Uploading the same bytes again and naming the model in a
CreateJob delete the mark (:func:`unmark`), and the removal claims the mark by a compare-and-swap on
the etag the pass read, so a mark touched meanwhile, or claimed by another replica, is left alone.
Shards users put under ``datasets/`` with their own tools are never removed.
"""

from __future__ import annotations

import contextlib
import json
import time

from ...errors import ServiceError
from ...storage import InvalidKey, ObjectNotFound, ObjectStore, PreconditionFailed
from .keys import DATASETS, MODELS, TenantKeys, is_sha256
from .storage_errors import storage_errors
from .stores import TenantStores


def unmark(store: ObjectStore, tenant: str, kind: str, sha256: str) -> None:
    """The upload is in use again: forget that it was seen unreferenced."""
    with storage_errors(writing=True):
        store.delete(TenantKeys(tenant).gc_mark(kind, sha256))


def _references(stores: TenantStores) -> tuple[set[str], set[str], list[str]]:
    """The model digests, dataset keys and dataset key prefixes the tenant's job records name."""
    models: set[str] = set()
    exact: set[str] = set()
    prefixes: list[str] = []
    uris = stores.artifacts.uris
    token = ""
    while True:
        jobs, token = stores.jobs.list_jobs(500, token)
        for job in jobs:
            models.add(job.model.sha256)
            for entry in [*job.spec.data.train, *job.spec.data.eval]:
                try:
                    key = uris.key_for_uri(entry.rstrip("/"))
                except InvalidKey:
                    continue
                if entry.endswith("/"):
                    prefixes.append(key + "/")
                else:
                    exact.add(key)
        if not token:
            return models, exact, prefixes


def _uploads(store: ObjectStore, prefix: str) -> list[str]:
    """The digests of uploads under ``prefix`` (``<prefix><sha256>/meta.json``)."""
    with storage_errors():
        keys = store.list_keys(prefix)
    found = []
    for key in keys:
        digest, _, rest = key[len(prefix) :].partition("/")
        if rest == "meta.json" and is_sha256(digest):
            found.append(digest)
    return found


def collect_unreferenced(stores: TenantStores, grace_s: float, now: float | None = None) -> list[str]:
    """One pass over the tenant (see the module docstring); the keys of the uploads removed."""
    now = time.time() if now is None else now
    keys = TenantKeys(stores.jobs.tenant)
    models, exact, prefixes = _references(stores)
    removed: list[str] = []
    for sha256 in _uploads(stores.store, keys.models_prefix):
        if sha256 not in models:
            objects = [keys.model_meta(sha256), keys.model(sha256)]
            removed += _age(stores, MODELS, sha256, objects, grace_s, now)
        else:
            unmark(stores.store, stores.jobs.tenant, MODELS, sha256)
    for sha256 in _uploads(stores.store, keys.datasets_prefix):
        data = f"{keys.datasets_prefix}{sha256}/data.npz"
        if data in exact or any(data.startswith(p) for p in prefixes):
            unmark(stores.store, stores.jobs.tenant, DATASETS, sha256)
            continue
        meta = f"{keys.datasets_prefix}{sha256}/meta.json"
        removed += _age(stores, DATASETS, sha256, [meta, data], grace_s, now)
    return removed


def _age(
    stores: TenantStores, kind: str, sha256: str, objects: list[str], grace_s: float, now: float
) -> list[str]:
    """Mark an unreferenced upload, or remove it once marked for ``grace_s``; the keys removed."""
    mark = TenantKeys(stores.jobs.tenant).gc_mark(kind, sha256)
    store = stores.store
    with storage_errors(writing=True):
        info = store.head(mark)
        if info is None:
            with contextlib.suppress(PreconditionFailed):
                store.put_bytes(mark, json.dumps({"since": now}).encode(), if_absent=True)
            return []
        try:
            since = float(json.loads(store.get_bytes(mark)).get("since", now))
        except (ObjectNotFound, ValueError, AttributeError):
            return []
        if now - since < grace_s:
            return []
        try:
            store.put_bytes(mark, json.dumps({"removing": now}).encode(), if_match=info.etag)
        except PreconditionFailed:
            return []
        sizes = [store.head(key) for key in objects]
        for key in objects:
            store.delete(key)
    size = sum(i.size for i in sizes[1:] if i is not None)
    if size:
        with contextlib.suppress(ServiceError):
            stores.usage.add(-size)
    with storage_errors(writing=True):
        store.delete(mark)
    return objects[1:]
