"""How botocore failures map onto the store's errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from ._base import (
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
)

_CONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_BUCKET_CODES = {"NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "AuthorizationHeaderMalformed"}
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
}
_BUSY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable"}
_DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch"}


@contextlib.contextmanager
def translate(key: str, where: str, attempts: int, *, conditional: bool = False) -> Iterator[None]:
    """Re-raise botocore errors from the block as :class:`StorageError` subclasses.

    ``where`` names the endpoint and bucket in messages; ``attempts`` is the retry budget
    already spent by botocore. With ``conditional`` a missing key means the condition lost.
    """
    try:
        yield
    except ClientError as exc:
        raise _client_error(exc, key, where, attempts, conditional=conditional) from exc
    except (ConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise StorageUnavailable(f"S3 at {where} unreachable after {attempts} attempts: {exc}") from exc
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise StorageUnavailable(f"no usable S3 credentials for {where}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 request to {where} failed: {exc}") from exc


def _client_error(
    exc: ClientError, key: str, where: str, attempts: int, *, conditional: bool
) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    detail = f"{code or status}: {error.get('Message', '')}".rstrip(": ")
    if code in _CONDITION_CODES or status == 412:
        return PreconditionFailed(f"conditional write of {key!r} lost ({detail})")
    if code in _BUCKET_CODES:
        return StorageUnavailable(f"S3 bucket unusable at {where}: {detail}")
    if code in _MISSING_CODES:
        if conditional:
            return PreconditionFailed(f"conditional write of {key!r} lost: it does not exist")
        return ObjectNotFound(key)
    if code in _AUTH_CODES or status in (401, 403):
        return StorageUnavailable(f"S3 at {where} rejected the credentials or denied access ({detail})")
    if code in _BUSY_CODES or status >= 500:
        return StorageUnavailable(f"S3 at {where} failed after {attempts} attempts ({detail})")
    if code in _DIGEST_CODES:
        return ChecksumMismatch(f"S3 rejected the content of {key!r} ({detail})")
    return StorageError(f"S3 request for {key!r} at {where} failed ({detail})")
