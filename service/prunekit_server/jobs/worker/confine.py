"""The worker's sandbox, entered before it opens any model (on top of the stripped environment and the
rlimits): what a parser bug that gives code execution can reach.

With ``sandbox`` in its task the worker, in this order:

1. as root only: enters a mount namespace of its own and hides each ``hide`` path (the file store's
   root) under an empty read-only tmpfs;
2. as root only: becomes ``uid``/``gid`` (no supplementary groups), after giving its working directory
   to that uid: the store root (kept ``0700`` by the server) and the server's files are then out of
   reach, and ``/proc/<server>/environ`` too (root's). Skipped, and said so, when that uid could not
   reach the working directory or the Python installation (e.g. Python under a ``0700`` ``/root``);
3. everywhere: sets ``no_new_privs`` and installs a seccomp filter (x86-64 and aarch64) refusing with
   EPERM ptrace, process_vm_readv/writev, mount/umount, unshare/setns/pivot_root/chroot, the kernel
   keyring, bpf, perf_event_open, module and kexec loading, and IPv4/IPv6 sockets (a worker needs no
   network).

The server, for its part, makes itself non-dumpable (:func:`protect_server`): a worker of the same uid
(a container running as one non-root uid) cannot read its ``/proc/<pid>/environ`` or memory either.
Only Python's standard library and Linux are used; what is not available is skipped and reported by
:func:`confine`'s result.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
import sys
from pathlib import Path
from typing import Any

__all__ = ["confine", "protect_server"]

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
_PR_SET_DUMPABLE, _PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS = 4, 22, 38
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS_W, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_AF_INET, _AF_INET6 = 2, 10

#: (audit arch, socket syscall, denied syscalls) per machine.
_ARCHES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "x86_64": (
        0xC000003E,
        41,
        (101, 310, 311, 165, 166, 272, 308, 155, 161, 248, 249, 250, 321, 298, 175, 313, 176, 246, 320),
    ),
    "aarch64": (
        0xC00000B7,
        198,
        (117, 270, 271, 40, 39, 97, 268, 41, 51, 217, 218, 219, 280, 241, 105, 273, 106, 104, 294),
    ),
}
_X32_BIT = 0x40000000


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def protect_server() -> bool:
    """Make this process non-dumpable (its /proc files become root's, ptrace by its uid is refused)."""
    try:
        _check(_libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    except (OSError, AttributeError):
        return False
    return True


def _hide(paths: list[str]) -> bool:
    """A private mount namespace with an empty read-only tmpfs over each existing path in ``paths``."""
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "mount(MS_PRIVATE)")
    flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    for path in paths:
        if os.path.isdir(path):
            _check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, b"size=4k,mode=000"), f"mount {path}")
    return True


def _unreachable(workdir: Path) -> Path | None:
    """A directory another uid could not pass to reach the working directory or this Python's modules
    (``sys.path``: the interpreter's library, the packages): dropping to it would break the worker."""
    needed = [workdir.parent, *(Path(entry) for entry in sys.path if entry and os.path.isdir(entry))]
    for place in needed:
        for folder in [place, *place.parents] if place != workdir.parent else list(place.parents):
            if not os.stat(folder).st_mode & 0o001:
                return folder
    return None


def _become(uid: int, gid: int, workdir: Path) -> None:
    """Give ``workdir`` to ``uid``/``gid``, then drop to them for good."""
    for folder, dirs, files in os.walk(workdir):
        for name in [folder, *(os.path.join(folder, n) for n in [*dirs, *files])]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, gid, follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.chmod(workdir.parent, 0o711)  # the server's directory: passable, not listable
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _filter(arch: int, socket_nr: int, denied: tuple[int, ...]) -> bytes:
    """The BPF program: other arches allowed (the filter is not theirs), x32 and ``denied`` EPERM, IPv4
    and IPv6 ``socket`` EPERM, everything else allowed."""
    program: list[tuple[int, int, int, int]] = []
    rest = len(denied)
    program.append((_LD_ABS_W, 0, 0, 4))
    program.append((_JEQ_K, 0, rest + 6, arch))
    program.append((_LD_ABS_W, 0, 0, 0))
    program.append((_JGE_K, rest + 5, 0, _X32_BIT))
    for i, number in enumerate(denied):
        program.append((_JEQ_K, rest - i + 4, 0, number))
    program.append((_JEQ_K, 0, 3, socket_nr))
    program.append((_LD_ABS_W, 0, 0, 16))
    program.append((_JEQ_K, 2, 0, _AF_INET))
    program.append((_JEQ_K, 1, 0, _AF_INET6))
    program.append((_RET_K, 0, 0, _RET_ALLOW))
    program.append((_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    return b"".join(struct.pack("HBBI", *instruction) for instruction in program)


def _seccomp() -> bool:
    """no_new_privs and the filter of this machine; False where there is none for it."""
    spec = _ARCHES.get(platform.machine())
    if spec is None:
        return False
    code = _filter(*spec)
    count = len(code) // 8
    buffer = ctypes.create_string_buffer(code, len(code))

    class _Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = _Program(count, ctypes.cast(buffer, ctypes.c_void_p))
    libc = _libc()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(
        libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )
    return True


def confine(sandbox: dict[str, Any], workdir: Path) -> dict[str, str]:
    """Enter the sandbox ``sandbox`` describes (``uid``, ``gid``: -1 = keep; ``hide``: paths) for a worker
    in ``workdir``; what each layer did: "on", or why it is off."""
    applied: dict[str, str] = {}
    root = os.geteuid() == 0
    hide = [str(p) for p in sandbox.get("hide", [])]
    if not root:
        applied["mounts"] = applied["uid"] = "off: not root"
    else:
        try:
            applied["mounts"] = "on" if hide and _hide(hide) else "off: nothing to hide"
        except OSError as exc:
            applied["mounts"] = f"off: {exc.strerror}"
        uid, gid = int(sandbox.get("uid", -1)), int(sandbox.get("gid", -1))
        blocked = _unreachable(workdir) if uid >= 0 else None
        if uid < 0:
            applied["uid"] = "off: not configured"
        elif blocked is not None:
            applied["uid"] = f"off: {blocked} is not passable by other users"
        else:
            _become(uid, gid if gid >= 0 else uid, workdir)
            applied["uid"] = f"on: {uid}"
    try:
        applied["seccomp"] = "on" if _seccomp() else f"off: no filter for {platform.machine()}"
    except OSError as exc:
        applied["seccomp"] = f"off: {exc.strerror}"
    return applied
