"""A store in an S3 bucket (AWS or any S3-compatible endpoint), under an optional key prefix."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config

from ._base import (
    ChecksumMismatch,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageUnavailable,
)
from ._keys import (
    RootedKeys,
    check_conditions,
    check_limit,
    is_sha256_hex,
    normalise_sha256,
    validate_key,
    validate_prefix,
)
from ._local import file_sha256, write_atomically
from ._s3_errors import translate

MIB = 1 << 20
PART_SIZE = 8 * MIB
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
_MIN_PART = 5 * MIB
_MAX_PARTS = 10_000
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_TRUTHY = {"1", "true", "yes", "on"}

_LOADER = botocore.loaders.create_loader()


def default_max_attempts() -> int:
    """Tries per request: botocore's ``AWS_MAX_ATTEMPTS`` when it is a positive integer, else MAX_ATTEMPTS."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_ATTEMPTS


def _session() -> boto3.session.Session:
    """A fresh session (own credentials and config) sharing one parsed-model cache."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3Store(RootedKeys):
    """Objects in ``s3://bucket/prefix/<key>``.

    Every upload sends a SHA-256 checksum that S3 verifies (per part for multipart uploads,
    whose composite checksum is checked after completion) and records the hex sha256 as
    object metadata ``sha256``; reads check it. Conditional writes use ``If-None-Match: *``
    and ``If-Match: <etag>``. Requests retry in botocore's ``standard`` mode; what still
    fails becomes a :class:`StorageError` subclass. The endpoint comes from ``endpoint_url``
    or ``AWS_ENDPOINT_URL(_S3)``; path-style addressing is used when ``path_style`` is true,
    ``PRUNEKIT_S3_PATH_STYLE=1``, or (by default) whenever an endpoint URL is set.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        path_style: bool | None = None,
        region: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        multipart_threshold: int = PART_SIZE,
        part_size: int = PART_SIZE,
    ) -> None:
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        if part_size < _MIN_PART:
            raise ValueError(f"part_size must be at least {_MIN_PART} bytes")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._bucket = bucket
        self._prefix = prefix + "/" if prefix else ""
        self._root_at(
            f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}", f"s3://{bucket}/{self._prefix}"
        )
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._max_attempts = max_attempts
        self._bucket_checked = False
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if path_style is None:
            env = os.environ.get("PRUNEKIT_S3_PATH_STYLE")
            path_style = env.strip().lower() in _TRUTHY if env else bool(endpoint)
        session = _session()
        config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path" if path_style else "auto"},
            request_checksum_calculation="when_supported",
            response_checksum_validation="when_supported",
        )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or session.region_name or "us-east-1",
            config=config,
        )
        self._where = f"{self._client.meta.endpoint_url} bucket {bucket!r}"

    def __repr__(self) -> str:
        return f"S3Store({self._uri!r})"

    @property
    def client(self) -> Any:
        """The underlying boto3 S3 client (for presigned URLs and the like)."""
        return self._client

    @property
    def bucket(self) -> str:
        return self._bucket

    def object_name(self, key: str) -> str:
        """The S3 object key (with the store's prefix) for ``key``."""
        return self._prefix + validate_key(key)

    def put_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None
    ) -> ObjectInfo:
        check_conditions(if_absent, if_match)
        digest = hashlib.sha256(data).digest()
        args = self._put_args(key, digest.hex(), if_absent=if_absent)
        if if_match is not None:
            args["IfMatch"] = if_match
        args["ChecksumSHA256"] = _b64(digest)
        with self._errors(key, conditional=if_match is not None):
            response = self._client.put_object(Body=data, **args)
        return ObjectInfo(key=key, size=len(data), sha256=digest.hex(), etag=str(response["ETag"]))

    def put_file(
        self, key: str, path: Path, *, sha256: str | None = None, if_absent: bool = False
    ) -> ObjectInfo:
        expected = normalise_sha256(sha256)
        validate_key(key)
        actual, size = file_sha256(Path(path))
        if expected is not None and actual != expected:
            raise ChecksumMismatch(f"{str(path)!r} has sha256 {actual}, expected {expected}")
        return self._upload(key, Path(path), actual, size, if_absent=if_absent)

    def spool_dir(self) -> None:
        return None

    def adopt_file(self, key: str, path: Path, *, sha256: str, if_absent: bool = False) -> ObjectInfo:
        expected = normalise_sha256(sha256)
        assert expected is not None
        validate_key(key)
        info = self._upload(key, Path(path), expected, Path(path).stat().st_size, if_absent=if_absent)
        Path(path).unlink()
        return info

    def _upload(self, key: str, path: Path, sha256: str, size: int, *, if_absent: bool) -> ObjectInfo:
        if size > self._threshold:
            etag = self._put_multipart(key, path, sha256, size, if_absent=if_absent)
        else:
            args = self._put_args(key, sha256, if_absent=if_absent)
            args["ChecksumSHA256"] = _b64(bytes.fromhex(sha256))
            with open(path, "rb") as body, self._errors(key):
                etag = str(self._client.put_object(Body=body, ContentLength=size, **args)["ETag"])
        return ObjectInfo(key=key, size=size, sha256=sha256, etag=etag)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        response = self._get(key)
        write_atomically(Path(path), self._stream(key, response, 1 * MIB))
        return self._info(key, response)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._stream(key, self._get(key), chunk_size)

    def head(self, key: str) -> ObjectInfo | None:
        name = self.object_name(key)
        try:
            with self._errors(key):
                response = self._client.head_object(Bucket=self._bucket, Key=name)
        except ObjectNotFound:
            self._check_bucket()
            return None
        return self._info(key, response)

    def list_keys(
        self, prefix: str, *, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        validate_prefix(prefix)
        check_limit(limit)
        args: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self._prefix + prefix}
        if start_after:
            args["StartAfter"] = self._prefix + start_after
        keys: list[str] = []
        while limit is None or len(keys) < limit:
            args["MaxKeys"] = 1000 if limit is None else min(1000, limit - len(keys))
            with self._errors(prefix):
                page = self._client.list_objects_v2(**args)
            for item in page.get("Contents", []):
                key = str(item["Key"])[len(self._prefix) :]
                with contextlib.suppress(InvalidKey):
                    keys.append(validate_key(key))
            if not page.get("IsTruncated"):
                break
            args["ContinuationToken"] = page["NextContinuationToken"]
        return keys[:limit] if limit is not None else keys

    def delete(self, key: str) -> None:
        name = self.object_name(key)
        with contextlib.suppress(ObjectNotFound), self._errors(key):
            self._client.delete_object(Bucket=self._bucket, Key=name)

    def _put_args(self, key: str, sha256_hex: str, *, if_absent: bool) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": self.object_name(key),
            "Metadata": {"sha256": sha256_hex},
            "ChecksumAlgorithm": "SHA256",
        }
        if if_absent:
            args["IfNoneMatch"] = "*"
        return args

    def _put_multipart(self, key: str, path: Path, sha256_hex: str, size: int, *, if_absent: bool) -> str:
        if if_absent and self.head(key) is not None:
            raise PreconditionFailed(f"{key!r} already exists")
        part_size = max(self._part_size, -(-size // _MAX_PARTS))
        args = self._put_args(key, sha256_hex, if_absent=False)
        with self._errors(key):
            upload_id = str(self._client.create_multipart_upload(**args)["UploadId"])
        target = {"Bucket": self._bucket, "Key": args["Key"], "UploadId": upload_id}
        try:
            parts: list[dict[str, Any]] = []
            digests: list[bytes] = []
            whole = hashlib.sha256()
            with open(path, "rb") as source:
                while chunk := source.read(part_size):
                    digest = hashlib.sha256(chunk).digest()
                    whole.update(chunk)
                    digests.append(digest)
                    number = len(digests)
                    with self._errors(key):
                        response = self._client.upload_part(
                            Body=chunk,
                            PartNumber=number,
                            ChecksumAlgorithm="SHA256",
                            ChecksumSHA256=_b64(digest),
                            **target,
                        )
                    parts.append(
                        {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": _b64(digest)}
                    )
            if whole.hexdigest() != sha256_hex:
                raise ChecksumMismatch(f"{str(path)!r} changed while it was being uploaded")
            condition = {"IfNoneMatch": "*"} if if_absent else {}
            with self._errors(key):
                done = self._client.complete_multipart_upload(
                    MultipartUpload={"Parts": parts}, **condition, **target
                )
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(**target)
            raise
        self._check_composite(
            key, done.get("ChecksumSHA256"), _b64(hashlib.sha256(b"".join(digests)).digest())
        )
        return str(done["ETag"])

    def _check_composite(self, key: str, reported: str | None, expected: str) -> None:
        if reported is None:
            with self._errors(key):
                head = self._client.head_object(
                    Bucket=self._bucket, Key=self.object_name(key), ChecksumMode="ENABLED"
                )
            reported = head.get("ChecksumSHA256")
        if reported is not None and str(reported).split("-")[0] != expected:
            raise ChecksumMismatch(f"S3 reports checksum {reported} for {key!r}, expected {expected}")

    def _get(self, key: str) -> dict[str, Any]:
        name = self.object_name(key)
        with self._errors(key):
            response: dict[str, Any] = self._client.get_object(Bucket=self._bucket, Key=name)
        return response

    def _stream(self, key: str, response: dict[str, Any], chunk_size: int) -> Iterator[bytes]:
        expected = self._info(key, response).sha256
        body = response["Body"]
        digest = hashlib.sha256()
        try:
            with self._errors(key):
                for chunk in body.iter_chunks(chunk_size):
                    digest.update(chunk)
                    yield chunk
        finally:
            body.close()
        if expected is not None and digest.hexdigest() != expected:
            raise ChecksumMismatch(f"{key!r} has sha256 {digest.hexdigest()}, recorded {expected}")

    def _info(self, key: str, response: dict[str, Any]) -> ObjectInfo:
        sha256 = str(response.get("Metadata", {}).get("sha256", "")).lower()
        checksum = response.get("ChecksumSHA256")
        if not is_sha256_hex(sha256):
            sha256 = ""
            if checksum and "-" not in checksum:
                with contextlib.suppress(ValueError):
                    sha256 = base64.b64decode(checksum, validate=True).hex()
        return ObjectInfo(
            key=key, size=int(response["ContentLength"]), sha256=sha256 or None, etag=str(response["ETag"])
        )

    def _check_bucket(self) -> None:
        """A HEAD 404 does not say whether the key or the bucket is missing; ask once."""
        if self._bucket_checked:
            return
        try:
            with self._errors(""):
                self._client.head_bucket(Bucket=self._bucket)
        except ObjectNotFound:
            raise StorageUnavailable(f"S3 bucket unusable at {self._where}: NoSuchBucket") from None
        self._bucket_checked = True

    def _errors(self, key: str, *, conditional: bool = False) -> contextlib.AbstractContextManager[None]:
        return translate(key, self._where, self._max_attempts, conditional=conditional)
