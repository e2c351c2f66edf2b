"""Servers' own scratch directories: a dead server's (killed with SIGKILL, so it removed nothing) is
removed when the next server starts; a live one's, in another process or this one, is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from prunekit_server.scratch import PREFIX, ServerScratch, remove_dead
from prunekit_server.server import start_server
from tests.service.api.conftest import TEST_SETTINGS

_HOLDER = """
import sys, time
from pathlib import Path
from prunekit_server.scratch import ServerScratch
scratch = ServerScratch.claim(Path(sys.argv[1]))
(scratch.path / "job-dir").mkdir()
print(scratch.path, flush=True)
time.sleep(600)
"""


def _holder(root: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_only_the_directories_of_dead_servers_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    dead, dead_dir = _holder(root)
    live, live_dir = _holder(root)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=60)
        (root / "prunekit-job-123-abc").mkdir()
        mine = ServerScratch.claim(root)
        assert not dead_dir.exists()
        assert (live_dir / "job-dir").is_dir()
        assert (root / "prunekit-job-123-abc").is_dir(), "not a server's directory: left alone"
        assert remove_dead(root) == [], "this process's own directory is locked too"
        assert mine.path.name.startswith(f"{PREFIX}{os.getpid()}-")
        mine.release()
        assert not mine.path.exists()
    finally:
        live.kill()
        live.wait(timeout=60)
    assert remove_dead(root) == [live_dir]


def test_a_server_works_in_its_own_directory_and_removes_it_at_stop(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    leftover, leftover_dir = _holder(root)
    leftover.kill()
    leftover.wait(timeout=60)
    settings = replace(TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", scratch_dir=str(root))
    first = start_server(settings)
    second = start_server(settings)
    own = [Path(first.settings.scratch_dir), Path(second.settings.scratch_dir)]
    try:
        assert not leftover_dir.exists()
        assert all(path.parent == root and path.is_dir() for path in own)
        assert own[0] != own[1]
    finally:
        first.stop(grace=1.0)
        assert not own[0].exists()
        assert own[1].is_dir()
        second.stop(grace=1.0)
    assert sorted(p.name for p in root.iterdir()) == []
