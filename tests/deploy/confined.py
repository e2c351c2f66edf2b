"""``prunekit-server`` as the pod runs it, without a container runtime: a read-only root, one writable
scratch mount (the pod's /tmp emptyDir), and the image's unprivileged uid where this machine's Python
can be run by it (a Python under /root, as pyenv puts it, cannot). Needs root and util-linux's
``unshare`` and ``setpriv``: the mounts are made in a private mount namespace, the host is untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.manifests import ROOT

#: The image's user (Dockerfile USER, runAsUser in the manifests).
UID = 10001
_LISTENING = re.compile(r"listening on (\S+):(\d+)")
# Every mount read-only, then a tmpfs on the scratch directory; refuses to start if the root stayed
# writable; then drops to the image's uid. $1 scratch dir, $2 a path on the root to probe, then argv.
_CONFINE = """
set -eu
scratch="$1"; probe="$2"; shift 2
for target in $(awk '{print $5}' /proc/self/mountinfo); do
  case "$target" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$target" 2>/dev/null || true
done
if touch "$probe" 2>/dev/null; then rm -f "$probe"; echo "root is still writable" >&2; exit 97; fi
mount -t tmpfs -o size=2g,mode=1777 tmpfs "$scratch"
exec "$@"
"""
_DROP_PRIVILEGES = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs"]


@dataclass
class Confined:
    proc: subprocess.Popen[str]
    target: str

    def terminate(self, timeout: float) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def _require_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace (CI and the dev machines run as root)")
    for name in ("unshare", "setpriv", "mount"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} (util-linux) is not installed")


def usable_by_others(path: Path) -> bool:
    """Whether any user can reach ``path`` (search on every parent) and read and run it."""
    resolved = path.resolve()
    reachable = all(parent.stat().st_mode & 0o001 for parent in resolved.parents)
    return reachable and resolved.stat().st_mode & 0o005 == 0o005


@contextmanager
def confined_server(env: dict[str, str], log: Path) -> Iterator[Confined]:
    """The server on 127.0.0.1 and a free port; only ``scratch`` (a fresh tmpfs) is writable."""
    _require_tools()
    scratch = Path(tempfile.mkdtemp(prefix="prunekit-scratch-"))
    scratch.chmod(0o755)  # the mount point: reachable by the unprivileged uid
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PRUNEKIT_", "AWS_"))}
    server_env = {
        **inherited,
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PRUNEKIT_HOST": "127.0.0.1",
        "PRUNEKIT_PORT": "0",
        "PRUNEKIT_SCRATCH_DIR": str(scratch),
        "PRUNEKIT_STORAGE": f"file://{scratch}/data",
        "PRUNEKIT_AUTH": "none",
        **env,
    }
    unprivileged = usable_by_others(Path(sys.executable)) and usable_by_others(ROOT / "service")
    command = [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _CONFINE, "confine",
        str(scratch), str(ROOT / ".read-only-probe"),
        *(_DROP_PRIVILEGES if unprivileged else []), sys.executable, "-m", "prunekit_server.main",
    ]  # fmt: skip
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, env=server_env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        started = time.monotonic()
        line = proc.stdout.readline()
        match = _LISTENING.search(line)
        assert match, f"server did not start ({time.monotonic() - started:.0f} s):\n{log.read_text()}"
        yield Confined(proc, f"127.0.0.1:{match.group(2)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        scratch.rmdir()
