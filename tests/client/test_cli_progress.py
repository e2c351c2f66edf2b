"""What the CLI shows while it waits: analyze's ticker, the upload and download bars."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from prunekit import cli
from prunekit._cli_output import received_bar, sent_bar, ticking


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_analyze_says_what_it_waits_for(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "net.onnx"
    model.write_bytes(b"\x08\x07" * 100)
    assert cli.main(["--server", target, "analyze", str(model)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "analyzing net.onnx..."
    assert err[-1].startswith("analyzing net.onnx: done in ")


def test_the_ticker_redraws_on_a_terminal() -> None:
    out = Terminal()
    with ticking("analyzing m.onnx", out):
        pass
    assert out.getvalue().startswith("\r\x1b[K")
    assert out.getvalue().endswith("analyzing m.onnx: done in 0 s\n")


def test_the_upload_bar_only_on_a_terminal() -> None:
    assert sent_bar("m.onnx", io.StringIO()) is None
    out = Terminal()
    draw = sent_bar("m.onnx", out)
    assert draw is not None
    draw(1 << 20, 4 << 20)
    draw(4 << 20, 4 << 20)
    text = out.getvalue()
    assert "uploading m.onnx  25% (1.0 MiB of 4.0 MiB)" in text
    assert "uploading m.onnx 100% (4.0 MiB of 4.0 MiB)" in text
    assert text.endswith("\r\x1b[K")


def test_the_download_bar_names_each_artifact_on_a_terminal() -> None:
    assert received_bar(io.StringIO()) is None
    out = Terminal()
    draw = received_bar(out)
    assert draw is not None
    draw("pruned.onnx", 0, 2 << 20)
    draw("pruned.onnx", 2 << 20, 2 << 20)
    draw("report.md", 10, 10)
    text = out.getvalue()
    assert "downloading pruned.onnx   0% (0 B of 2.0 MiB)" in text
    assert "downloading pruned.onnx 100% (2.0 MiB of 2.0 MiB)" in text
    assert "downloading report.md 100%" in text
    assert text.endswith("\r\x1b[K")
