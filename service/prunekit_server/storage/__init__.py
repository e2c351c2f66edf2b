"""Object storage: one small contract, two real backends (local filesystem and S3).

>>> store = open_store("file:///var/lib/prunekit")          # or "s3://bucket/prefix"
>>> info = store.put_bytes("jobs/j1/record.json", b"{}", if_absent=True)
>>> store.get_bytes("jobs/j1/record.json")
b'{}'

Keys are relative ``/``-separated paths (see :func:`validate_key`); every error is a
:class:`StorageError`. This package knows nothing of jobs or models.
"""

from __future__ import annotations

from typing import TypeVar, cast

from . import _s3
from ._base import (
    ChecksumMismatch,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from ._file import FileStore
from ._keys import validate_key, validate_prefix
from ._s3 import S3Store

__all__ = [
    "ChecksumMismatch",
    "FileStore",
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "S3Store",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "open_store",
    "validate_key",
    "validate_prefix",
]


def open_store(uri: str, **options: object) -> ObjectStore:
    """Open the store at ``uri``.

    - ``s3://bucket`` or ``s3://bucket/prefix``: an :class:`S3Store`. Options:
      ``endpoint_url`` (str), ``path_style`` (bool), ``region`` (str), ``max_attempts`` (int; default
      ``AWS_MAX_ATTEMPTS``, else 5),
      ``connect_timeout`` / ``read_timeout`` (seconds), ``multipart_threshold`` / ``part_size``
      (bytes). Credentials, region and endpoint otherwise come from the usual AWS environment.
    - ``file:///abs/path``, an absolute or relative path: a :class:`FileStore`, created if
      missing. Option: ``use_xattrs`` (bool).

    URIs are taken literally (no percent-decoding). Raises ``ValueError`` for an unsupported
    scheme, a malformed URI or an unknown or ill-typed option, and :class:`StorageUnavailable`
    if a file store's root cannot be created.
    """
    opts = dict(options)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        store = S3Store(
            bucket,
            prefix,
            endpoint_url=_opt(opts, "endpoint_url", str, None),
            path_style=_opt(opts, "path_style", bool, None),
            region=_opt(opts, "region", str, None),
            max_attempts=_opt(opts, "max_attempts", int, _s3.default_max_attempts()),
            connect_timeout=_opt(opts, "connect_timeout", float, _s3.CONNECT_TIMEOUT),
            read_timeout=_opt(opts, "read_timeout", float, _s3.READ_TIMEOUT),
            multipart_threshold=_opt(opts, "multipart_threshold", int, _s3.PART_SIZE),
            part_size=_opt(opts, "part_size", int, _s3.PART_SIZE),
        )
        _no_more(opts)
        return store
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported store URI {uri!r}: use s3://bucket/prefix or file:///path")
    path = uri
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        if not path.startswith("/"):
            raise ValueError(f"file store URI {uri!r} must be absolute: file:///path")
    if not path:
        raise ValueError("empty store URI")
    use_xattrs = _opt(opts, "use_xattrs", bool, True)
    _no_more(opts)
    return FileStore(path, use_xattrs=use_xattrs)


_T = TypeVar("_T")
_D = TypeVar("_D")


def _opt(options: dict[str, object], name: str, kind: type[_T], default: _D) -> _T | _D:
    if name not in options:
        return default
    value = options.pop(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return cast("_T | _D", value)
    raise ValueError(f"store option {name} must be {kind.__name__}, not {value!r}")


def _no_more(options: dict[str, object]) -> None:
    if options:
        raise ValueError(f"unknown store options: {', '.join(sorted(options))}")
