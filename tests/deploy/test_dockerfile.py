"""The server image: hadolint finds nothing, and the Dockerfile says what the deployment relies on."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib

import pytest

from prunekit_server.config import Settings
from tests.deploy.dockerfile import Dockerfile, exec_form, parse
from tests.deploy.manifests import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def image() -> Dockerfile:
    return parse(DOCKERFILE)


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_every_hadolint_ignore_gives_its_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        found = re.fullmatch(r"# hadolint ignore=([\w,]+)", line.strip())
        if found:
            reason = lines[number - 1].strip()
            for rule in found.group(1).split(","):
                assert reason.startswith("#"), f"line {number + 1}: no reason above the ignore"
                assert rule in reason, f"line {number + 1}: {rule} unexplained"


def test_gpu_is_the_default_and_cpu_a_build_argument(image: Dockerfile) -> None:
    assert image.global_args["VARIANT"] == "gpu"
    assert image.stages[-1].base == "runtime-${VARIANT}"
    names = {s.name for s in image.stages}
    assert {"runtime-gpu", "runtime-cpu"} <= names
    install = " ".join(image.stage("build").args("RUN"))
    assert "gpu)" in install
    assert "cpu)" in install
    assert "onnxruntime-gpu" in install


def test_gpu_image_turns_the_worker_address_space_limit_off(image: Dockerfile) -> None:
    assert image.stage("runtime-gpu").env()["PRUNEKIT_WORKER_MEMORY_BYTES"] == "0"
    assert "PRUNEKIT_WORKER_MEMORY_BYTES" not in image.stage("runtime-cpu").env()


def test_runtime_stage_installs_nothing(image: Dockerfile) -> None:
    runtime = image.stage("runtime")
    commands = " ".join(runtime.args("RUN"))
    for installer in ("pip", "apt-get", "apt ", "gcc", "make"):
        assert installer not in commands, f"the runtime stage runs {installer}"
    assert [c for c in runtime.args("COPY") if c.startswith("--from=")] == [
        "--from=build /opt/prunekit /opt/prunekit"
    ]
    for stage in image.stages:
        if stage.name.startswith("runtime-"):
            assert set(dict(stage.instructions)) <= {"ENV"}, f"{stage.name} only sets the environment"


def test_runtime_runs_the_server_unprivileged(image: Dockerfile) -> None:
    runtime = image.stage("runtime")
    (user,) = runtime.args("USER")
    assert user.split(":")[0] not in {"0", "root"}
    (entrypoint,) = runtime.args("ENTRYPOINT")
    assert exec_form(entrypoint) == ["prunekit-server"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "prunekit-server" in scripts
    env = runtime.env()
    assert env["HOME"] == "/tmp", "read-only root: HOME on the /tmp volume"
    assert env["PRUNEKIT_HOST"] == "0.0.0.0"
    assert int(env["PRUNEKIT_PORT"]) == Settings().port
    (exposed,) = runtime.args("EXPOSE")
    assert int(exposed) == Settings().port


def test_healthcheck_and_stop_match_the_server(image: Dockerfile) -> None:
    runtime = image.stage("runtime")
    (healthcheck,) = runtime.args("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv[:2] == ["python", "-m"]
    assert importlib.util.find_spec(argv[2]) is not None, f"{argv[2]} does not exist"
    assert "--start-period=" in options
    assert runtime.args("STOPSIGNAL") == ["SIGTERM"]
    assert float(runtime.env()["PRUNEKIT_SHUTDOWN_GRACE_S"]) == Settings().shutdown_grace_s


def test_build_context_is_an_allow_list_of_what_the_build_copies(image: Dockerfile) -> None:
    entries = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert entries[0] == "*", "everything is excluded unless allowed"
    allowed = {e[1:].rstrip("/") for e in entries if e.startswith("!")}
    copied = {
        source
        for rest in image.stage("build").args("COPY")
        for source in rest.split()[:-1]
        if not source.startswith("--")
    }
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert copied == allowed
    assert readme in allowed
