"""Rendering the kustomize trees in ``deploy/`` and walking the objects they produce."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "prunekit"
SERVER_LABELS = {"app.kubernetes.io/name": "prunekit", "app.kubernetes.io/component": "server"}
GPU_RESOURCE = "nvidia.com/gpu"
#: Secrets the manifests read but never create: the user creates them (README, "Deploy on Kubernetes").
EXTERNAL_SECRETS = frozenset({"prunekit-s3", "prunekit-tls", "prunekit-auth"})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"})

Obj = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    """What one rendering is expected to be."""

    name: str
    #: Kustomization directories, relative to deploy/: one overlay, or an overlay plus components.
    overlay: str
    components: tuple[str, ...] = ()
    gpu: bool = False
    #: "https": an external S3 store on port 443; "minio": the in-cluster MinIO of the component.
    object_store: str = "https"


SHAPES = (
    Shape("gpu", "overlays/gpu", gpu=True),
    Shape("cpu", "overlays/cpu"),
    Shape("dev", "overlays/dev", object_store="minio"),
    # Front doors on CPU, jobs on a KubeRay RayCluster (its GPU group is checked by test_ray_cluster).
    Shape("ray", "overlays/ray"),
    # The component composes with the production overlay too (a GPU cluster without object storage).
    Shape("gpu+minio", "overlays/gpu", ("components/minio",), gpu=True, object_store="minio"),
)


def tool(name: str) -> str:
    """The path of a command-line tool from the dev extra: the venv's scripts first, then PATH."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which(name, path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip(f"{name} is not installed: `make install` installs it with the dev extra")
    return found


def render(shape: Shape, workdir: Path) -> list[Obj]:
    """``kubectl kustomize`` of the shape's overlay (and components), as a list of objects."""
    target = DEPLOY / shape.overlay
    if shape.components:
        # kustomize takes no absolute roots: a throwaway kustomization refers to the tree relatively.
        workdir.mkdir(parents=True, exist_ok=True)
        document = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NAMESPACE,
            "resources": [os.path.relpath(target, workdir)],
            "components": [os.path.relpath(DEPLOY / c, workdir) for c in shape.components],
        }
        (workdir / "kustomization.yaml").write_text(yaml.safe_dump(document))
        target = workdir
    done = subprocess.run(
        [tool("kubectl"), "kustomize", str(target)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {shape.overlay} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_templates(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) for every object that makes pods (a RayCluster's head and groups too)."""
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            yield obj, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]
        elif obj["kind"] == "RayCluster":
            yield obj, obj["spec"]["headGroupSpec"]["template"]
            for group in obj["spec"].get("workerGroupSpecs", []):
                yield obj, group["template"]


def containers(pod_spec: Obj) -> list[Obj]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def server(objects: list[Obj]) -> tuple[Obj, Obj]:
    """The prunekit Deployment and its server container."""
    deployment = named(objects, "Deployment", "prunekit")
    (container,) = (c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "server")
    return deployment, container


def server_config(objects: list[Obj]) -> Mapping[str, str]:
    """The environment the server gets from its ConfigMaps (the Secret holds only credentials)."""
    _, container = server(objects)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
