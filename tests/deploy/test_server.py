"""The prunekit server's Deployment: probes, settings, drain, scratch, GPU or not, Services."""

from __future__ import annotations

from pathlib import PurePosixPath

from prunekit.v1 import optimizer_service_pb2
from prunekit_server.config import Settings
from tests.deploy.manifests import (
    GPU_RESOURCE,
    SERVER_LABELS,
    Obj,
    Shape,
    of_kind,
    selects,
    server,
    server_config,
)

SERVICE_NAME = optimizer_service_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name
#: RunningServer.stop(): the drain of PRUNEKIT_SHUTDOWN_GRACE_S, then server.stop(grace=2).
GRPC_STOP_GRACE_S = 2
#: Read by the S3 backend rather than Settings.
STORAGE_VARIABLES = frozenset({"PRUNEKIT_S3_PATH_STYLE"})


def settings(objects: list[Obj]) -> Settings:
    config = server_config(objects)
    known = {f"PRUNEKIT_{name.upper()}" for name in Settings.__dataclass_fields__} | STORAGE_VARIABLES
    unknown = {k for k in config if k.startswith("PRUNEKIT_")} - known
    assert not unknown, f"settings the server does not read: {sorted(unknown)}"
    return Settings.from_env(config)  # raises on a value that does not parse


def grpc_port(container: Obj, name: str = "grpc") -> int:
    (port,) = (p["containerPort"] for p in container["ports"] if p["name"] == name)
    assert isinstance(port, int)
    return port


def test_settings_parse_and_point_at_object_storage(objects: list[Obj], shape: Shape) -> None:
    _, container = server(objects)
    values = settings(objects)
    assert values.host == "0.0.0.0"
    assert values.port == grpc_port(container) == 50051
    assert values.storage.startswith("s3://")
    assert values.enable_test_hooks is False
    endpoint = server_config(objects).get("AWS_ENDPOINT_URL")
    assert (endpoint == "http://prunekit-minio:9000") == (shape.object_store == "minio")


def test_native_grpc_probes_on_the_plaintext_health_port(objects: list[Obj]) -> None:
    _, container = server(objects)
    port = grpc_port(container, "health")
    assert settings(objects).health_port == port != grpc_port(container)
    probes = {kind: container[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    for kind, probe in probes.items():
        assert set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, kind
        assert probe["grpc"]["port"] == port, kind
    assert probes["liveness"]["grpc"].get("service", "") == ""
    assert probes["readiness"]["grpc"]["service"] == SERVICE_NAME
    startup = probes["startup"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "CUDA start-up can be slow"


def test_metrics_port_is_served_named_and_annotated_for_prometheus(objects: list[Obj]) -> None:
    deployment, container = server(objects)
    port = grpc_port(container, "metrics")
    values = settings(objects)
    assert values.metrics_port == port not in (grpc_port(container), grpc_port(container, "health"))
    assert values.log_format == "json"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_termination_grace_outlasts_the_drain(objects: list[Obj]) -> None:
    deployment, _ = server(objects)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings(objects).shutdown_grace_s + GRPC_STOP_GRACE_S


def test_scratch_is_on_a_bounded_empty_dir(objects: list[Obj]) -> None:
    deployment, container = server(objects)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): volumes[m["name"]] for m in container["volumeMounts"]}
    scratch = PurePosixPath(settings(objects).scratch_dir or "/tmp")
    holder = next((path for path in mounts if scratch == path or path in scratch.parents), None)
    assert holder is not None, f"scratch dir {scratch} is on the read-only root"
    assert mounts[holder]["emptyDir"]["sizeLimit"]
    assert "emptyDir" in mounts[PurePosixPath("/tmp")], "/tmp (HOME, temp files) must be writable"


def test_gpu_resources_and_scheduling(objects: list[Obj], shape: Shape) -> None:
    deployment, container = server(objects)
    spec = deployment["spec"]["template"]["spec"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    tolerated = {t.get("key") for t in spec.get("tolerations", [])}
    if shape.gpu:
        assert limits[GPU_RESOURCE] == requests[GPU_RESOURCE] == "1"
        assert requests == limits, "GPU pods are Guaranteed: requests equal limits"
        assert spec["nodeSelector"], "GPU pods go to the GPU pool"
        assert GPU_RESOURCE in tolerated
        assert settings(objects).worker_memory_bytes == 0, "RLIMIT_AS breaks CUDA"
    else:
        assert GPU_RESOURCE not in requests
        assert GPU_RESOURCE not in limits
        assert GPU_RESOURCE not in tolerated
        assert not any("nvidia" in key for key in spec.get("nodeSelector", {}))
        assert settings(objects).worker_memory_bytes != 0, "CPU workers keep RLIMIT_AS (-1: derived)"


def test_tls_and_tokens_come_from_mounted_secrets(objects: list[Obj]) -> None:
    deployment, container = server(objects)
    values = settings(objects)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): m for m in container["volumeMounts"]}
    secrets = {}
    for path in (values.tls_cert_file, values.tls_key_file, values.auth_tokens_file):
        mount = mounts[PurePosixPath(path).parent]
        assert mount.get("readOnly") is True
        assert "subPath" not in mount, "a subPath mount never sees a renewed Secret"
        secrets[path] = volumes[mount["name"]]["secret"]["secretName"]
    assert set(secrets.values()) == {"prunekit-tls", "prunekit-auth"}
    assert values.auth == "required"


def test_headless_and_cluster_ip_services(objects: list[Obj]) -> None:
    services = [s for s in of_kind(objects, "Service") if selects(s["spec"]["selector"], SERVER_LABELS)]
    by_name = {s["metadata"]["name"]: s["spec"] for s in services}
    assert by_name["prunekit-headless"]["clusterIP"] == "None"
    assert by_name["prunekit"].get("type", "ClusterIP") == "ClusterIP"
    assert by_name["prunekit"].get("clusterIP") != "None"
    for spec in by_name.values():
        (port,) = spec["ports"]
        assert (port["port"], port["targetPort"]) == (50051, "grpc")


def test_quotas_retention_and_the_worker_sandbox_are_on(objects: list[Obj]) -> None:
    values = settings(objects)
    assert values.quota_active_jobs > 0
    assert values.quota_stored_bytes > 0
    assert values.retention_days > 0
    assert values.gc_grace_hours > 0
    assert values.worker_sandbox is True
