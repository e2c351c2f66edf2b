"""The ray overlay: a KubeRay RayCluster valid against the CRD's schema, its GPU group scaling from 0,
and the front door (CPU, no GPU) pointed at the head."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from prunekit_server.config import Settings
from tests.deploy.manifests import GPU_RESOURCE, SHAPES, Obj, containers, named, render, server, server_config

from .test_render import KUBERNETES_VERSIONS

SCHEMA = Path(__file__).parent / "schemas" / "raycluster-ray.io-v1.json"
CLUSTER = "prunekit-ray"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    (shape,) = (s for s in SHAPES if s.name == "ray")
    return render(shape, tmp_path_factory.mktemp("kustomize"))


def _cluster(objects: list[Obj]) -> Obj:
    return named(objects, "RayCluster", CLUSTER)


def _groups(objects: list[Obj]) -> dict[str, Obj]:
    return {g["groupName"]: g for g in _cluster(objects)["spec"]["workerGroupSpecs"]}


def _schema_errors(cluster: Obj) -> list[str]:
    jsonschema: Any = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    return sorted(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(cluster)
    )


def test_the_ray_cluster_is_valid_against_kuberays_crd_schema(objects: list[Obj]) -> None:
    errors = _schema_errors(_cluster(objects))
    assert not errors, "\n".join(errors)


def test_the_schema_refuses_a_misspelt_field_and_a_number_as_a_start_parameter(objects: list[Obj]) -> None:
    cluster = copy.deepcopy(_cluster(objects))
    cluster["spec"]["workerGroupSpecs"][0]["minReplica"] = 0
    cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    errors = _schema_errors(cluster)
    assert len(errors) == 2, errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_ray_pod_templates_are_valid_pods(objects: list[Obj], version: str) -> None:
    kubernetes_validate: Any = pytest.importorskip("kubernetes_validate")
    spec = _cluster(objects)["spec"]
    templates = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    for template in templates:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ray", **template["metadata"]}}
        kubernetes_validate.validate({**pod, "spec": template["spec"]}, version, strict=True)


def test_the_gpu_group_scales_from_zero_and_the_head_runs_no_jobs(objects: list[Obj]) -> None:
    spec = _cluster(objects)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert head["image"].endswith("-cpu")
    assert GPU_RESOURCE not in head["resources"]["limits"]
    gpu = _groups(objects)["gpu"]
    assert gpu["minReplicas"] == gpu["replicas"] == 0 < gpu["maxReplicas"]
    pod = gpu["template"]["spec"]
    (worker,) = containers(pod)
    assert worker["image"].endswith("-gpu")
    assert worker["resources"]["limits"][GPU_RESOURCE] == worker["resources"]["requests"][GPU_RESOURCE] == "1"
    assert pod["nodeSelector"], "GPU pods go to the GPU pool"
    assert GPU_RESOURCE in {t.get("key") for t in pod["tolerations"]}
    cpu = _groups(objects)["cpu"]
    assert cpu["minReplicas"] == 0
    assert GPU_RESOURCE not in containers(cpu["template"]["spec"])[0]["resources"]["limits"]


def test_nodes_set_their_own_job_settings(objects: list[Obj]) -> None:
    spec = _cluster(objects)["spec"]
    for template in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]:
        (container,) = containers(template["spec"])
        (config,) = (s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s)
        node = named(objects, "ConfigMap", config)["data"]
        assert Settings.from_env(node).worker_memory_bytes == 0, "RLIMIT_AS breaks CUDA"
        assert node["PRUNEKIT_SCRATCH_DIR"] in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_front_door_is_a_cpu_pod_pointed_at_the_head(objects: list[Obj]) -> None:
    deployment, container = server(objects)
    config = server_config(objects)
    assert Settings.from_env(config).executor == "ray"
    (head,) = _cluster(objects)["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    client = next(p["containerPort"] for p in head["ports"] if p["name"] == "client")
    assert config["RAY_ADDRESS"] == f"ray://{CLUSTER}-head-svc:{client}"
    assert container["image"].endswith("-cpu")
    assert GPU_RESOURCE not in container["resources"]["limits"]
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
