"""Fixtures shared by every test: a real moto S3 server and fresh buckets on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.moto_s3 import running_moto_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server for the session, with the AWS environment pointing at it.

    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``testing``), ``AWS_DEFAULT_REGION``
    (``us-east-1``) and ``AWS_ENDPOINT_URL`` are set in ``os.environ`` (so subprocesses
    inherit them) until the session ends.
    """
    with running_moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "PRUNEKIT_S3_PATH_STYLE"):
            mp.delenv(name, raising=False)
        yield endpoint


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Any:
    """A plain boto3 S3 client for the moto server, to arrange and inspect buckets directly."""
    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def s3_bucket_uri(s3_admin: Any) -> str:
    """A fresh, empty bucket on the moto server, as ``s3://<bucket>/prefix``."""
    bucket = f"prunekit-test-{uuid.uuid4().hex[:16]}"
    s3_admin.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/prefix"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for the test: with ``-n 2`` the workers share the CPUs, and
    oversubscribed threads make small models orders of magnitude slower. Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` (or an autouse fixture in a conftest)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
