"""Health and reflection are served, so grpcurl and Kubernetes gRPC probes work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import TEST_SETTINGS, start


def test_health_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "prunekit.v1.OptimizerService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="prunekit.v1.OptimizerService"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"prunekit.v1.OptimizerService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_reflection_v1_answers_like_v1alpha(channel: grpc.Channel) -> None:
    """grpcurl asks ``grpc.reflection.v1`` first; its messages are v1alpha's on the wire."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="prunekit.v1.OptimizerService"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
    ]
    listed, described, missing = list(call(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "prunekit.v1.OptimizerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    assert described.file_descriptor_response.file_descriptor_proto
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_missing_scratch_directory_is_created_at_start(tmp_path: Path) -> None:
    scratch = tmp_path / "not" / "there" / "yet"
    running = start(replace(TEST_SETTINGS, storage=f"file://{tmp_path / 'store'}", scratch_dir=str(scratch)))
    try:
        assert scratch.is_dir()
        with grpc.insecure_channel(running.target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.stop(grace=1.0)
