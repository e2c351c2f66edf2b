"""The locations a server hides from clients, replaced wherever they appear in error texts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prunekit_server.errors import Code, FieldViolation, ServiceError
from prunekit_server.redact import forget_all, hidden, hide, hide_store, redact
from prunekit_server.rpc_status import from_status, to_status


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    """An empty registry for each test; what servers of other tests registered comes back after."""
    before = hidden()
    forget_all()
    yield
    forget_all()
    for text, placeholder in before.items():
        hide(text, placeholder)


def test_a_file_store_and_scratch_are_hidden_in_both_spellings() -> None:
    hide_store("file:///srv/prunekit-data")
    hide("/var/scratch", "<scratch>")
    text = "'/srv/prunekit-data' failed; see file:///srv/prunekit-data/tenants/x and /var/scratch/j1"
    assert redact(text) == "'<storage>' failed; see <storage>/tenants/x and <scratch>/j1"
    assert redact("/srv/prunekit-data2 and /var/scratchpad") == "/srv/prunekit-data2 and /var/scratchpad"


def test_an_s3_bucket_its_bare_name_and_the_endpoint_are_hidden() -> None:
    hide_store("s3://team-models-prod/deploy", "http://10.1.2.3:9000")
    text = "S3 at http://10.1.2.3:9000 bucket 'team-models-prod': s3://team-models-prod/deploy/k, s3://team-models-prod/x"
    assert redact(text) == "S3 at <storage-endpoint> bucket '<bucket>': <storage>/k, <storage>/x"
    assert redact("team-models-production") == "team-models-production"


def test_a_short_bucket_name_is_hidden_only_in_uris() -> None:
    hide_store("s3://models")
    assert redact("no models here; s3://models/k") == "no models here; <storage>/k"


def test_statuses_carry_redacted_texts() -> None:
    hide_store("file:///srv/store")
    error = ServiceError(
        Code.INTERNAL,
        "INTERNAL_ERROR",
        "object at /srv/store/tenants/a failed",
        [FieldViolation("spec.data.eval[0]", "file:///srv/store/x is odd")],
        metadata={"entry": "file:///srv/store/x"},
    )
    shown = from_status(to_status(error))
    assert shown.message == "object at <storage>/tenants/a failed"
    assert shown.metadata == {"entry": "<storage>/x"}
    assert shown.violations[0].description == "<storage>/x is odd"
