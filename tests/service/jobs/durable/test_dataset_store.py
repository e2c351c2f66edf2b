"""DatasetStore over real stores (file and moto S3): uploads, resolving a spec's data, staging shards."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunekit.v1 import model_pb2, spec_pb2
from prunekit_server.errors import ServiceError
from prunekit_server.jobs.durable import dataset_store
from prunekit_server.jobs.durable.dataset_store import DatasetStore
from prunekit_server.storage import ObjectStore, open_store

PREFIX = "tenants/default/datasets/"


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def shard(samples: int = 6, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return npz(input=rng.normal(size=(samples, 4)).astype(np.float32), label=np.arange(samples) % 3)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "s3":
        return open_store(request.getfixturevalue("s3_bucket_uri"))
    return open_store(f"file://{tmp_path / 'storage'}")


def datasets(store: ObjectStore, *, max_bytes: int = 1 << 20, max_shards: int = 4) -> DatasetStore:
    return DatasetStore(store, "default", max_job_bytes=max_bytes, max_job_shards=max_shards)


def upload(ds: DatasetStore, data: bytes, tmp_path: Path, name: str = "train.npz") -> model_pb2.DatasetRef:
    path = tmp_path / f"upload-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    ref = model_pb2.DatasetRef(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), filename=name)
    stored, _ = ds.put(path, ref)
    return stored


def put_user_shard(store: ObjectStore, key: str, data: bytes) -> str:
    """A shard written straight into storage (as a user's own S3 tools would), returning its URI."""
    store.put_bytes(key, data)
    return "prunekit://" + key.removeprefix("tenants/default/")


def error_of(call: Any) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value


def test_put_fills_the_ref_and_dedupes(store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets(store)
    data = shard(samples=7)
    first = upload(ds, data, tmp_path)
    assert first.uri == f"prunekit://datasets/{first.sha256}/data.npz"
    assert (first.samples, list(first.arrays), first.filename) == (7, ["input", "label"], "train.npz")
    path = tmp_path / "again"
    path.write_bytes(data)
    again, deduplicated = ds.put(path, model_pb2.DatasetRef(sha256=first.sha256, size_bytes=len(data)))
    assert deduplicated
    assert again == first
    assert ds.find(first.sha256) == first
    assert store.get_bytes(f"{PREFIX}{first.sha256}/data.npz") == data


def test_an_invalid_upload_stores_nothing(store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets(store)
    data = npz(input=np.zeros((3, 2), np.float32), label=np.zeros(4, np.int64))
    error = error_of(lambda: upload(ds, data, tmp_path, "bad.npz"))
    assert (error.code.name, error.reason) == ("INVALID_ARGUMENT", "INVALID_DATASET")
    assert {v.field for v in error.violations} == {"bad.npz:input", "bad.npz:label"}
    assert store.list_keys(PREFIX) == []


def test_resolve_uploaded_uris_and_prefix_entries(store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets(store)
    uploaded = upload(ds, shard(), tmp_path)
    b = put_user_shard(store, f"{PREFIX}team/digits/b.npz", shard(seed=2))
    a = put_user_shard(store, f"{PREFIX}team/digits/a.npz", shard(seed=1))
    store.put_bytes(f"{PREFIX}team/digits/README.txt", b"not a shard")
    resolved = ds.resolve(spec_pb2.DataSpec(train=["prunekit://datasets/team/digits/"], eval=[uploaded.uri]))
    assert [s.uri for s in resolved.train] == [a, b]
    legacy = store.uri_for(f"{PREFIX}team/digits/README.txt").removesuffix("README.txt")
    assert [s.uri for s in ds.resolve(spec_pb2.DataSpec(train=[legacy])).train] == [a, b]
    assert [s.uri for s in resolved.eval] == [uploaded.uri]
    assert resolved.eval[0].sha256 == uploaded.sha256
    assert resolved.total_bytes == sum(s.size for s in [*resolved.train, *resolved.eval])


def test_missing_entries_are_not_found(store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets(store)
    missing = f"prunekit://datasets/{'ab' * 32}/data.npz"
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(train=[missing])))
    assert (error.code.name, error.reason) == ("NOT_FOUND", "DATASET_NOT_FOUND")
    assert missing in error.message
    empty = store.uri_for(f"{PREFIX}nothing/x.npz").removesuffix("x.npz")
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(eval=[empty])))
    assert (error.reason, error.metadata["entry"]) == ("DATASET_NOT_FOUND", empty)


@pytest.mark.parametrize(
    "entry",
    [
        "tenants/other/datasets/x.npz",
        "tenants/default/models/x.npz",
        "tenants/default/datasets-x/x.npz",
        "tenants/default/datasets/../models/x/model",
        "tenants/default/datasets/./x.npz",
    ],
)
def test_entries_outside_the_prefix_are_denied(store: ObjectStore, entry: str) -> None:
    ds = datasets(store)
    uri = store.uri.rstrip("/") + "/" + entry
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(train=[uri])))
    assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "DATASET_OUTSIDE_PREFIX")


@pytest.mark.parametrize(
    "entry",
    [
        "prunekit://models/x/model",
        "prunekit://datasets/../models/x/model",
        "prunekit://../other/datasets/x.npz",
        "prunekit:///tenants/default/datasets/x.npz",
        "prunekit://datasets-x/x.npz",
    ],
)
def test_logical_entries_outside_the_prefix_are_denied(store: ObjectStore, entry: str) -> None:
    error = error_of(lambda: datasets(store).resolve(spec_pb2.DataSpec(train=[entry])))
    assert (error.code.name, error.reason) == ("PERMISSION_DENIED", "DATASET_OUTSIDE_PREFIX")


def test_links_on_the_file_backend_are_denied_not_internal(tmp_path: Path) -> None:
    """A link under the tenant's prefix (to another tenant's shard) names something outside it."""
    root = tmp_path / "storage"
    store = open_store(f"file://{root}")
    put_user_shard(store, "tenants/other/datasets/secret/x.npz", shard())
    (root / PREFIX).mkdir(parents=True)
    (root / PREFIX / "dir").symlink_to(root / "tenants/other/datasets/secret")
    (root / PREFIX / "file.npz").symlink_to(root / "tenants/other/datasets/secret/x.npz")
    ds = datasets(store)
    for entry in ("dir/x.npz", "file.npz"):
        uri = ds.prefix_uri + entry
        error = error_of(lambda uri=uri: ds.resolve(spec_pb2.DataSpec(train=[uri])))
        assert (error.code.name, error.reason, error.metadata) == (
            "PERMISSION_DENIED",
            "DATASET_OUTSIDE_PREFIX",
            {"entry": uri},
        )
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(train=[ds.prefix_uri + "dir/"])))
    assert error.reason == "DATASET_NOT_FOUND"


def test_entries_in_another_store_or_not_uris(store: ObjectStore) -> None:
    ds = datasets(store)
    other = "s3://another-bucket/tenants/default/datasets/x.npz"
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(train=[other])))
    assert error.reason == "DATASET_OUTSIDE_PREFIX"
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(train=["s3://ok/x.npz"], eval=["x.npz"])))
    assert (error.reason, [v.field for v in error.violations]) == ("DATASET_OUTSIDE_PREFIX", [])
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(eval=["x.npz"])))
    assert (error.reason, [v.field for v in error.violations]) == ("INVALID_SPEC", ["spec.data.eval[0]"])


def test_limits_on_shards_and_bytes(store: ObjectStore, tmp_path: Path) -> None:
    data = shard()
    uris = [put_user_shard(store, f"{PREFIX}many/{i}.npz", data) for i in range(3)]
    folder = uris[0].removesuffix("0.npz")
    assert len(datasets(store, max_shards=3).resolve(spec_pb2.DataSpec(train=[folder])).train) == 3
    error = error_of(lambda: datasets(store, max_shards=2).resolve(spec_pb2.DataSpec(train=[folder])))
    assert (error.code.name, error.reason) == ("RESOURCE_EXHAUSTED", "DATASET_TOO_LARGE")
    error = error_of(
        lambda: datasets(store, max_shards=3).resolve(spec_pb2.DataSpec(train=[folder], eval=[uris[0]]))
    )
    assert error.metadata == {"max_job_data_shards": "3"}
    small = datasets(store, max_bytes=2 * len(data))
    error = error_of(lambda: small.resolve(spec_pb2.DataSpec(train=[folder])))
    assert (error.reason, error.metadata) == ("DATASET_TOO_LARGE", {"max_job_data_bytes": str(2 * len(data))})


def test_stage_writes_the_task_data(store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets(store)
    uploaded = upload(ds, shard(seed=5), tmp_path)
    user_data = shard(seed=6)
    user = put_user_shard(store, f"{PREFIX}mine/train.npz", user_data)
    workdir = tmp_path / "work"
    staged = ds.stage(spec_pb2.DataSpec(train=[user, uploaded.uri], eval=[uploaded.uri]), workdir)
    assert staged == {
        "train": [
            {
                "path": "input/data/train/0000.npz",
                "uri": user,
                "sha256": hashlib.sha256(user_data).hexdigest(),
            },
            {"path": "input/data/train/0001.npz", "uri": uploaded.uri, "sha256": uploaded.sha256},
        ],
        "eval": [{"path": "input/data/eval/0000.npz", "uri": uploaded.uri, "sha256": uploaded.sha256}],
    }
    assert (workdir / "input/data/train/0000.npz").read_bytes() == user_data
    with np.load(workdir / "input/data/eval/0000.npz") as loaded:
        assert loaded["input"].shape == (6, 4)
    assert ds.stage(spec_pb2.DataSpec(), tmp_path / "empty") == {"train": [], "eval": []}


def test_stage_checks_shards_put_by_users(store: ObjectStore, tmp_path: Path) -> None:
    ds = datasets(store)
    bad = put_user_shard(store, f"{PREFIX}mine/bad.npz", npz(input=np.zeros((2, 2)), label=np.ones(2)))
    error = error_of(lambda: ds.stage(spec_pb2.DataSpec(train=[bad]), tmp_path / "work"))
    assert (error.reason, [v.field for v in error.violations]) == ("INVALID_DATASET", ["bad.npz:label"])


def test_for_tenant_uses_the_stores_and_settings(tmp_path: Path) -> None:
    from prunekit_server.config import Settings
    from prunekit_server.jobs.durable.stores import TenantStores

    store = open_store(f"file://{tmp_path}")
    ds = DatasetStore.for_tenant(
        TenantStores.open(store, "acme"), Settings(max_job_data_bytes=10, max_job_data_shards=2)
    )
    assert (ds.prefix, ds.max_job_bytes, ds.max_job_shards) == ("tenants/acme/datasets/", 10, 2)
    assert ds.prefix_uri == "prunekit://datasets/"


def test_shards_without_a_recorded_sha256_are_hashed_while_staging(
    s3_bucket_uri: str, s3_admin: Any, tmp_path: Path
) -> None:
    store = open_store(s3_bucket_uri)
    bucket, _, root = s3_bucket_uri.removeprefix("s3://").partition("/")
    data = shard(seed=9)
    s3_admin.put_object(Bucket=bucket, Key=f"{root}/{PREFIX}plain/x.npz", Body=data)
    uri = store.uri_for(f"{PREFIX}plain/x.npz")
    ds = datasets(store)
    assert ds.resolve(spec_pb2.DataSpec(train=[uri])).train[0].sha256 == ""
    staged = ds.stage(spec_pb2.DataSpec(train=[uri]), tmp_path)
    assert staged["train"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_prefix_crowded_with_other_objects_is_refused_not_listed_forever(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_store, "_LIST_PAGE", 2)
    monkeypatch.setattr(dataset_store, "_MAX_LISTED", 4)
    for i in range(6):
        store.put_bytes(f"tenants/default/datasets/crowded/notes-{i}.txt", b"not a shard")
    store.put_bytes("tenants/default/datasets/crowded/z.npz", shard())
    ds = datasets(store)
    error = error_of(lambda: ds.resolve(spec_pb2.DataSpec(train=[ds.prefix_uri + "crowded/"])))
    assert (error.code.name, error.reason) == ("RESOURCE_EXHAUSTED", "DATASET_TOO_LARGE")
    assert "more than 4 objects" in error.message
