"""Log lines as text or JSON, each carrying the fields of its context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from prunekit_server.observability.logs import configure_logging, log_context


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_context_fields_and_tracebacks() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = logging.getLogger("prunekit_server.test")
    with log_context(job_id="j-1", tenant="team-a"), log_context(attempt=2, request_id=None):
        log.info("step %d", 3)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.debug("not at info")
    log.warning("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["step 3", "failed", "outside"]
    assert lines[0]["job_id"] == "j-1"
    assert lines[0]["tenant"] == "team-a"
    assert lines[0]["attempt"] == "2"
    assert "request_id" not in lines[0]
    assert lines[0]["level"] == "INFO"
    assert lines[0]["logger"] == "prunekit_server.test"
    assert lines[0]["time"].endswith("Z")
    assert "RuntimeError: boom" in lines[1]["exception"]
    assert "job_id" not in lines[2]


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_end_with_the_context_fields() -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "text", out)
    with log_context(job_id="j-2"):
        logging.getLogger("x").debug("hello")
    assert out.getvalue().rstrip().endswith("x: hello job_id=j-2")


def test_unknown_levels_and_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "text")
