"""Identity and tenancy through real TLS handshakes: two tenants on one server (a static token and a
JWT from a test issuer) see nothing of each other; calls without an accepted credential are
UNAUTHENTICATED; a plaintext client cannot talk to a TLS server; the CLI passes its token and CA."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc

import prunekit
from prunekit.v1 import job_pb2
from prunekit.v1 import optimizer_service_pb2 as pb
from prunekit.v1 import optimizer_service_pb2_grpc as pb_grpc
from prunekit_server.server import RunningServer, start_server
from tests.service.auth.material import AUDIENCE, ISSUER, Authority, Issuer, write_tokens_file

from .conftest import TEST_SETTINGS, status_error

TOKEN_A = "team-a-static-token-0123456789"
QUICK = {
    "prune": {"method": "unstructured", "ratio": 0.5},
    "benchmark": {"warmup": 1, "iterations": 3, "max_seconds": 0.5},
    "evaluation": {"samples": 4},
}


@dataclass
class Secured:
    server: RunningServer
    authority: Authority
    issuer: Issuer
    jwks_file: Path

    def client(self, token: str | None) -> prunekit.Client:
        return prunekit.Client(
            f"localhost:{self.server.port}",
            timeout=30,
            retries=0,
            token=token,
            ca_file=self.authority.ca_file,
        )

    def channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(self.authority.ca_file.read_bytes())
        return grpc.secure_channel(f"localhost:{self.server.port}", credentials)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("identity")
    authority = Authority.create(root / "pki")
    cert, key = authority.issue("server", "prunekit", server=True)
    issuer = Issuer.create(root / "jwks.json")
    tokens = write_tokens_file(root / "tokens.yaml", {TOKEN_A: ("team-a", "user")})
    settings = replace(
        TEST_SETTINGS,
        storage=f"file://{root / 'store'}",
        scratch_dir=str(root / "scratch"),
        auth="required",
        auth_tokens_file=str(tokens),
        auth_jwks_file=str(root / "jwks.json"),
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    running = start_server(settings)
    yield Secured(running, authority, issuer, root / "jwks.json")
    running.stop(grace=2.0)


def _refused(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(prunekit.PrunekitError) as caught:
        call()
    return caught.value.code, caught.value.reason


def test_two_tenants_see_use_cancel_and_download_nothing_of_each_other(
    secured: Secured, models: dict[str, Path], tmp_path: Path
) -> None:
    shard = {"input": np.zeros((8, 16), np.float32), "label": np.arange(8) % 4}
    with secured.client(TOKEN_A) as a, secured.client(secured.issuer.token("team-b")) as b:
        model_a = a.upload_model(models["mlp.onnx"])
        data_a = a.upload_dataset(shard)
        done = a.optimize(model_a, QUICK, request_id="shared-request")
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED
        artifact = done.artifacts[0].name
        not_found = (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
        assert _refused(lambda: b.get_job(done.id)) == not_found
        assert _refused(lambda: b.cancel_job(done.id)) == not_found
        assert _refused(lambda: list(b.watch_job(done.id))) == not_found
        assert _refused(lambda: b.download_artifact(done.id, artifact, tmp_path / "x")) == not_found
        assert done.id not in {job.id for job in b.iter_jobs()}
        model_missing = (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
        assert _refused(lambda: b.analyze(model_a)) == model_missing
        assert _refused(lambda: b.create_job(model_a, QUICK)) == model_missing

        model_b = b.upload_model(models["mlp.onnx"])
        assert model_b.uri == model_a.uri == f"prunekit://models/{model_a.sha256}/model"
        own = b.create_job(model_b, QUICK, request_id="shared-request")
        assert own.id != done.id
        made_up = data_a.uri.replace(data_a.sha256, "ab" * 32)
        for uri in (data_a.uri, made_up):
            spec = {**QUICK, "data": {"eval": [uri]}}
            assert _refused(lambda spec=spec: b.create_job(model_b, spec)) == (
                grpc.StatusCode.NOT_FOUND,
                "DATASET_NOT_FOUND",
            )
        key_of_a = f"tenants/team-a/datasets/{data_a.sha256}/data.npz"
        store_uri_of_a = secured.server.tenants.store.uri_for(key_of_a)
        spec = {**QUICK, "data": {"eval": [store_uri_of_a]}}
        assert _refused(lambda: b.create_job(model_b, spec)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "DATASET_OUTSIDE_PREFIX",
        )
        b.cancel_job(own.id)
        assert a.get_job(done.id).state == job_pb2.JOB_STATE_SUCCEEDED
        assert own.id not in {job.id for job in a.iter_jobs()}
        assert _refused(lambda: a.get_job(own.id)) == not_found
    keys = secured.server.tenants.store.list_keys("tenants/")
    assert {key.split("/")[1] for key in keys} == {"team-a", "team-b"}


def _code_and_reason(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), status_error(caught.value).reason


def test_calls_without_an_accepted_credential_are_unauthenticated(secured: Secured) -> None:
    issuer, key = secured.issuer, secured.issuer.key
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    other = Issuer.create(secured.jwks_file.parent / "other-jwks.json")
    bad = {
        "unknown static token": "not-a-token-of-this-server",
        "expired": issuer.token("team-b", exp=int(time.time()) - 3600),
        "not yet valid": issuer.token("team-b", nbf=int(time.time()) + 3600),
        "wrong audience": issuer.token("team-b", aud="someone-else"),
        "wrong issuer": issuer.token("team-b", iss="https://evil.test"),
        "another issuer's key": other.token("team-b"),
        "alg none": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "tenant": "team-b"}, None, algorithm="none"),
        "HS256 keyed with the public key": _hs256(public_pem),
        "tenant not a safe name": issuer.token("../team-a"),
        "role not known": issuer.token("team-b", role="root"),
    }
    with secured.channel() as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        request = pb.ListJobsRequest()
        assert _code_and_reason(lambda: stub.ListJobs(request, timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "AUTH_REQUIRED",
        )
        for case, token in bad.items():
            metadata = (("authorization", f"Bearer {token}"),)
            outcome = _code_and_reason(
                lambda metadata=metadata: stub.ListJobs(request, metadata=metadata, timeout=10)
            )
            assert outcome == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_INVALID"), case
        basic = (("authorization", "Basic dXNlcjpwYXNz"),)
        assert (
            _code_and_reason(lambda: stub.ListJobs(request, metadata=basic, timeout=10))[1] == "AUTH_INVALID"
        )
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _hs256(secret: bytes) -> str:
    """A JWT signed with HMAC keyed by ``secret`` (the confusion attack on servers that take the alg
    from the token); PyJWT itself refuses to make one with a PEM key."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"iss": ISSUER, "aud": AUDIENCE, "tenant": "team-b", "exp": int(time.time()) + 600}
    head = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "key-1"}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


def test_a_plaintext_client_cannot_talk_to_a_tls_server(secured: Secured) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secured.server.port}") as channel:
        stub = pb_grpc.OptimizerServiceStub(channel)
        metadata = (("authorization", f"Bearer {TOKEN_A}"),)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sdk_and_cli_with_a_token_and_a_ca(secured: Secured, models: dict[str, Path]) -> None:
    with secured.client(secured.issuer.token("team-sdk")) as client:
        model = client.upload_model(models["cnn.onnx"])
        job = client.create_job(model, QUICK)
        assert client.get_job(job.id).id == job.id
        client.cancel_job(job.id)
    env = {
        **os.environ,
        "PRUNEKIT_SERVER": f"localhost:{secured.server.port}",
        "PRUNEKIT_CA_FILE": str(secured.authority.ca_file),
        "PRUNEKIT_TOKEN": secured.issuer.token("team-sdk"),
    }
    listed = subprocess.run(
        [sys.executable, "-m", "prunekit.cli", "jobs", "list", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert job.id in listed.stdout
    env.pop("PRUNEKIT_TOKEN")
    refused = subprocess.run(
        [sys.executable, "-m", "prunekit.cli", "--retries", "0", "jobs", "list"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "UNAUTHENTICATED" in refused.stderr


def test_the_sdk_reads_the_server_token_and_ca_from_the_environment(
    secured: Secured, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secured.issuer.token("team-env")
    with secured.client(token) as explicit:
        job = explicit.create_job(explicit.upload_model(models["mlp.onnx"]), QUICK)
        explicit.cancel_job(job.id)
    monkeypatch.setenv("PRUNEKIT_SERVER", f"localhost:{secured.server.port}")
    monkeypatch.setenv("PRUNEKIT_CA_FILE", str(secured.authority.ca_file))
    monkeypatch.setenv("PRUNEKIT_TOKEN", token)
    with prunekit.Client(timeout=30, retries=0) as client:
        assert client.target == f"localhost:{secured.server.port}"
        assert [listed.id for listed in client.iter_jobs()] == [job.id]
    with prunekit.Client(timeout=30, retries=0, token="") as anonymous:
        assert _refused(anonymous.list_jobs) == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_REQUIRED")
    with prunekit.Client(timeout=30, retries=0, ca_file="") as plaintext:
        assert _refused(plaintext.list_jobs)[0] == grpc.StatusCode.UNAVAILABLE
