"""What `pip install prunekit` brings: every SDK dependency named in the README, and typed messages for
users' type checkers (the protobuf stubs are a dependency, so repeated fields and maps are not ``Any``)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
USER_CODE = """
from prunekit import Client

with Client("localhost:1") as client:
    job = client.get_job("x")
    reveal_type(job.artifacts)
    reveal_type(job.labels)
    reveal_type(job.report.variants[0].latency_speedup)
"""


def _sdk_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in project["dependencies"]]


def test_the_readme_names_every_sdk_dependency() -> None:
    readme = (ROOT / "README.md").read_text().lower()
    requirements = _sdk_requirements()
    assert "types-protobuf" in requirements
    assert [r for r in requirements if f"`{r}`" not in readme] == []


def test_a_users_type_checker_sees_typed_fields(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(USER_CODE)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental", str(user)],
        env={"MYPYPATH": str(ROOT / "client"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    revealed = re.findall(r'Revealed type is "([^"]+)"', checked.stdout)
    assert revealed == [
        "google.protobuf.internal.containers.RepeatedCompositeFieldContainer[prunekit.v1.job_pb2.Artifact]",
        "google.protobuf.internal.containers.ScalarMap[str, str]",
        "float",
    ], checked.stdout
