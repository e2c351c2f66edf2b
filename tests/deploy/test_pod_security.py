"""Every pod of every shape meets Pod Security "restricted" and the read-only-root layout."""

from __future__ import annotations

from tests.deploy.manifests import Obj, containers, name_of, pod_templates


def pods(objects: list[Obj]) -> list[tuple[str, Obj]]:
    found = [(name_of(w), t["spec"]) for w, t in pod_templates(objects)]
    assert found, "no workloads rendered"
    return found


def test_pods_run_as_non_root_with_runtime_default_seccomp(objects: list[Obj]) -> None:
    for where, spec in pods(objects):
        context = spec.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 0) != 0, where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), f"{where}: {key}"
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where


def test_containers_drop_everything_on_a_read_only_root(objects: list[Obj]) -> None:
    for where, spec in pods(objects):
        for container in containers(spec):
            context = container.get("securityContext", {})
            label = f"{where} container {container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, label
            assert context.get("readOnlyRootFilesystem") is True, label
            assert context.get("privileged", False) is False, label
            assert context.get("capabilities", {}).get("drop") == ["ALL"], label
            assert not context.get("capabilities", {}).get("add"), label
            assert context.get("runAsUser", 1) != 0, label
            assert not any("hostPort" in p for p in container.get("ports", [])), label


def test_no_api_token_and_no_service_links(objects: list[Obj]) -> None:
    for where, spec in pods(objects):
        assert spec.get("automountServiceAccountToken") is False, where
        # A Service named "prunekit" would inject PRUNEKIT_PORT=tcp://... and break the server's settings.
        assert spec.get("enableServiceLinks") is False, where
    for account in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert account.get("automountServiceAccountToken") is False, name_of(account)


def test_every_container_has_requests_and_limits(objects: list[Obj]) -> None:
    for where, spec in pods(objects):
        for container in containers(spec):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(kind, {}), (
                        f"{where} {container['name']}: {kind}.{resource}"
                    )


def test_scratch_volumes_are_bounded(objects: list[Obj]) -> None:
    for where, spec in pods(objects):
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), (
                    f"{where}: emptyDir {volume['name']} has no sizeLimit"
                )


def test_images_are_pinned(objects: list[Obj]) -> None:
    for where, spec in pods(objects):
        for container in containers(spec):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or (tag and tag != "latest"), f"{where}: {image} is not pinned"
            assert container.get("imagePullPolicy") == "IfNotPresent", where
