"""Every shape renders, every object is valid against the Kubernetes schemas, and references resolve."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    EXTERNAL_SECRETS,
    NAMESPACE,
    SHAPES,
    Obj,
    containers,
    name_of,
    named,
    of_kind,
    pod_templates,
    selects,
)

#: The oldest Kubernetes the manifests support (README) and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.30", "1.37")
#: Custom resources, validated against the schemas bundled in tests/deploy/schemas (test_ray_cluster).
CUSTOM_KINDS = frozenset({"RayCluster"})
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
)


def test_every_kustomization_is_rendered() -> None:
    overlays = {p.parent.relative_to(DEPLOY).as_posix() for p in DEPLOY.glob("overlays/*/kustomization.yaml")}
    components = {
        p.parent.relative_to(DEPLOY).as_posix() for p in DEPLOY.glob("components/*/kustomization.yaml")
    }
    assert overlays == {s.overlay for s in SHAPES if not s.components}
    assert components <= {c for s in SHAPES for c in s.components}
    assert components, "the minio component is missing"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_objects_are_valid_against_the_kubernetes_schemas(objects: list[Obj], version: str) -> None:
    kubernetes_validate: Any = pytest.importorskip("kubernetes_validate")
    errors = []
    for obj in (o for o in objects if o["kind"] not in CUSTOM_KINDS):
        try:
            # strict: unknown fields (a misspelt securityContext key) are errors too.
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name_of(obj)} {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name_of(obj)}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_names_are_unique_and_in_the_namespace(objects: list[Obj]) -> None:
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{name_of(obj)} would land in `default`"


def test_namespace_enforces_pod_security_restricted(objects: list[Obj]) -> None:
    labels = named(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pod_references_resolve(objects: list[Obj]) -> None:
    config_maps = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in of_kind(objects, "Secret")}
    claims = {o["metadata"]["name"] for o in of_kind(objects, "PersistentVolumeClaim")}
    accounts = {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")}

    def secret_ok(ref: Obj) -> bool:
        return ref["name"] in secrets or ref["name"] in EXTERNAL_SECRETS or ref.get("optional") is True

    for workload, template in pod_templates(objects):
        spec = template["spec"]
        where = name_of(workload)
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, where
            if "secret" in volume:
                assert secret_ok({"name": volume["secret"]["secretName"], **volume["secret"]}), where
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
        for container in containers(spec):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}: mount of undeclared volume {mount['name']}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, where
                if "secretRef" in source:
                    assert secret_ok(source["secretRef"]), where
            for item in container.get("env", []):
                ref = item.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] in config_maps, where
                if "secretKeyRef" in ref:
                    assert secret_ok(ref["secretKeyRef"]), where


def test_every_service_reaches_a_named_container_port(objects: list[Obj]) -> None:
    templates = [t for _, t in pod_templates(objects)]
    for service in of_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        pods = [t for t in templates if selects(selector, t["metadata"]["labels"])]
        assert pods, f"{name_of(service)} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                ports = [p for c in pod["spec"]["containers"] for p in c.get("ports", [])]
                assert any(target in (p.get("name"), p["containerPort"]) for p in ports), (
                    f"{name_of(service)} port {port['name']} -> {target}: no such container port"
                )


def test_autoscaler_and_disruption_budget_cover_the_server(objects: list[Obj]) -> None:
    deployment = named(objects, "Deployment", "prunekit")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "prunekit")
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"], "an autoscaler needs a metric"
    (pdb,) = [p for p in of_kind(objects, "PodDisruptionBudget") if p["metadata"]["name"] == "prunekit"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    # maxUnavailable keeps node drains possible even at one replica (minAvailable: 1 would block them).
    assert pdb["spec"].get("maxUnavailable") == 1
