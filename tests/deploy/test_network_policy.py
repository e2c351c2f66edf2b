"""NetworkPolicies: every pod is covered both ways; the server takes gRPC and reaches DNS and storage."""

from __future__ import annotations

from tests.deploy.manifests import Obj, Shape, name_of, named, of_kind, pod_templates, selects

DNS = {("UDP", 53), ("TCP", 53)}
STORE_PORT = {"https": ("TCP", 443), "minio": ("TCP", 9000)}


def ports(rule: Obj) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def test_every_pod_is_isolated_both_ways(objects: list[Obj]) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    for workload, template in pod_templates(objects):
        covering = [
            p
            for p in policies
            if selects(p["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"])
        ]
        directions = {d for p in covering for d in p["spec"]["policyTypes"]}
        assert directions == {"Ingress", "Egress"}, f"{name_of(workload)} is not isolated: {directions}"


def test_no_rule_opens_every_port_or_every_destination(objects: list[Obj]) -> None:
    for policy in of_kind(objects, "NetworkPolicy"):
        for direction in ("ingress", "egress"):
            for rule in policy["spec"].get(direction, []):
                assert rule.get("ports"), f"{name_of(policy)}: an {direction} rule without ports"
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{name_of(policy)}: an egress rule to anywhere"


def test_minio_reaches_nothing_and_only_prunekit_reaches_it(objects: list[Obj], shape: Shape) -> None:
    if shape.object_store != "minio":
        assert not [p for p in of_kind(objects, "NetworkPolicy") if "minio" in p["metadata"]["name"]]
        return
    spec = named(objects, "NetworkPolicy", "prunekit-minio")["spec"]
    assert spec["egress"] == []
    (rule,) = spec["ingress"]
    assert ports(rule) == {("TCP", 9000)}
    sources = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]}
    assert sources == {"prunekit", "minio"}  # the servers and the bucket Job


def test_server_ingress_is_grpc_from_labelled_callers_only(objects: list[Obj]) -> None:
    rule, metrics = named(objects, "NetworkPolicy", "prunekit")["spec"]["ingress"]
    assert ports(metrics) == {("TCP", 9090)}
    (scrapers,) = metrics["from"]
    assert scrapers == {"namespaceSelector": {"matchLabels": {"prunekit.dev/scrapers": "allowed"}}}
    assert ports(rule) == {("TCP", 50051)}
    assert rule["from"], "gRPC from anywhere"
    for peer in rule["from"]:
        assert "ipBlock" not in peer
        assert peer["podSelector"]["matchLabels"] == {"prunekit.dev/client": "true"}
        namespaces = peer.get("namespaceSelector")
        assert namespaces is None or namespaces["matchLabels"] == {"prunekit.dev/clients": "allowed"}


def test_server_egress_is_dns_and_the_object_store_only(objects: list[Obj], shape: Shape) -> None:
    egress = named(objects, "NetworkPolicy", "prunekit")["spec"]["egress"]
    for rule in egress:
        assert rule.get("to"), "egress rules name their destination"
    dns = [r for r in egress if ports(r) == DNS]
    assert len(dns) == 1
    (peer,) = dns[0]["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    store = [r for r in egress if r is not dns[0]]
    assert [ports(r) for r in store] == [{STORE_PORT[shape.object_store]}]
    if shape.object_store == "minio":
        (peer,) = store[0]["to"]
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "minio"
