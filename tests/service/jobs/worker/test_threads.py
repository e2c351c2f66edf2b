"""A worker's threads: the CPUs it may use (affinity, cgroup quota), the operator's settings first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prunekit_server.jobs.execution.sandbox import worker_env
from prunekit_server.jobs.worker.threads import cgroup_cpu_quota, thread_env, usable_cpus, worker_threads


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def _cgroup(tmp_path: Path, files: dict[str, str], proc: str = "0::/\n") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "self-cgroup").write_text(proc)
    return root, tmp_path / "self-cgroup"


def test_no_quota_means_the_affinity_mask(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cpus(root, proc) == _affinity()


def test_a_v2_quota_of_the_process_cgroup_caps_the_cpus(tmp_path: Path) -> None:
    files = {"cpu.max": "max 100000\n", "pods/worker/cpu.max": "50000 100000\n"}
    root, proc = _cgroup(tmp_path, files, proc="0::/pods/worker\n")
    assert cgroup_cpu_quota(root, proc) == 0.5
    assert usable_cpus(root, proc) == 1


def test_a_v1_quota_rounds_up(tmp_path: Path) -> None:
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "150000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    root, proc = _cgroup(tmp_path, files, proc="4:cpu,cpuacct:/\n")
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert usable_cpus(root, proc) == min(2, _affinity())


def test_an_unlimited_v1_quota(tmp_path: Path) -> None:
    files = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    root, proc = _cgroup(tmp_path, files)
    assert cgroup_cpu_quota(root, proc) is None


def test_thread_env_keeps_what_the_operator_set() -> None:
    assert thread_env({}, cpus=3) == {
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    chosen = thread_env({"OMP_NUM_THREADS": "8", "OMP_WAIT_POLICY": "ACTIVE"}, cpus=3)
    assert chosen == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert worker_threads({"OMP_NUM_THREADS": "8"}) == 8
    assert worker_threads({"OMP_NUM_THREADS": "zero"}) == usable_cpus()


def test_the_worker_environment_carries_the_thread_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-workers")
    env = worker_env(tmp_path)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(usable_cpus())
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert worker_env(tmp_path)["OMP_WAIT_POLICY"] == "ACTIVE"
