"""Client certificates (mTLS): the tenant is the certificate's subject CN; a client without a
certificate the configured CA signed cannot connect; a rotated server certificate is served to new
connections without a restart."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import prunekit
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import RunningServer, start_server
from tests.service.auth.material import Authority

from .conftest import TEST_SETTINGS


@dataclass
class Mutual:
    server: RunningServer
    authority: Authority
    cert_file: Path
    key_file: Path

    @property
    def target(self) -> str:
        return f"localhost:{self.server.port}"


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mutual]:
    root = tmp_path_factory.mktemp("mtls")
    authority = Authority.create(root / "pki")
    cert, key = authority.issue("server", "prunekit", server=True)
    settings = replace(
        TEST_SETTINGS,
        storage=f"file://{root / 'store'}",
        scratch_dir=str(root / "scratch"),
        workers=1,
        warm_workers=False,
        auth="required",
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_client_ca_file=str(authority.ca_file),
        health_port=0,
    )
    running = start_server(settings)
    yield Mutual(running, authority, cert, key)
    running.stop(grace=1.0)


def _client(target: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> prunekit.Client:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a fresh handshake per client
    return prunekit.Client(
        target, timeout=15, retries=0, ca_file=ca, cert_file=cert, key_file=key, channel_options=options
    )


def test_the_tenant_is_the_client_certificate_subject(
    mutual: Mutual, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = mutual.authority.issue("team-c", "team-c", server=False)
    with _client(mutual.target, mutual.authority.ca_file, cert, key) as client:
        model = client.upload_model(models["mlp.onnx"])
        assert client.list_jobs()[0] == []
    assert mutual.server.tenants.stores("team-c").models.find(model.sha256) == model
    monkeypatch.setenv("PRUNEKIT_CA_FILE", str(mutual.authority.ca_file))
    monkeypatch.setenv("PRUNEKIT_CERT_FILE", str(cert))
    monkeypatch.setenv("PRUNEKIT_KEY_FILE", str(key))
    with prunekit.Client(mutual.target, timeout=15, retries=0) as from_env:
        assert from_env.upload_model(models["mlp.onnx"]).uri == model.uri
    bad_cert, bad_key = mutual.authority.issue("bad-name", "not a tenant name", server=False)
    client = _client(mutual.target, mutual.authority.ca_file, bad_cert, bad_key)
    with client, pytest.raises(prunekit.PrunekitError) as caught:
        client.list_jobs()
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_INVALID")


def test_clients_without_a_certificate_of_the_ca_cannot_connect(mutual: Mutual, tmp_path: Path) -> None:
    stranger = Authority.create(tmp_path / "other", "another CA")
    cert, key = stranger.issue("team-c", "team-c", server=False)
    for client in (
        _client(mutual.target, mutual.authority.ca_file),
        _client(mutual.target, mutual.authority.ca_file, cert, key),
    ):
        with client, pytest.raises(prunekit.PrunekitError) as caught:
            client.list_jobs()
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_rotated_server_certificate_is_used_by_new_connections(mutual: Mutual, tmp_path: Path) -> None:
    cert, key = mutual.authority.issue("team-d", "team-d", server=False)
    rotated = Authority.create(tmp_path / "rotated", "rotated CA")
    new_cert, new_key = rotated.issue("server", "prunekit", server=True)
    staged_cert, staged_key = tmp_path / "cert.tmp", tmp_path / "key.tmp"
    shutil.copy(new_cert, staged_cert)
    shutil.copy(new_key, staged_key)
    staged_key.replace(mutual.key_file)  # as a Secret volume does: each file swapped whole
    staged_cert.replace(mutual.cert_file)
    with _client(mutual.target, rotated.ca_file, cert, key) as client:
        assert client.list_jobs()[0] == []
    stale = _client(mutual.target, mutual.authority.ca_file, cert, key)
    with stale, pytest.raises(prunekit.PrunekitError) as caught:
        stale.list_jobs()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_the_health_port_answers_probes_in_plaintext_and_nothing_else(mutual: Mutual) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mutual.server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "prunekit.v1.OptimizerService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.OptimizerServiceStub(channel).ListJobs(pb.ListJobsRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
