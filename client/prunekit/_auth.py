"""Channel security of the SDK: TLS from a CA file (and a client certificate for mTLS), and a bearer
token sent as ``authorization: Bearer <token>`` on every call."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import grpc

__all__ = [
    "ENV_CA_FILE",
    "ENV_CERT_FILE",
    "ENV_KEY_FILE",
    "ENV_SERVER",
    "ENV_TOKEN",
    "BearerToken",
    "from_env",
    "tls_credentials",
]

#: The variables the SDK and the CLI read when a setting is not given.
ENV_SERVER = "PRUNEKIT_SERVER"
ENV_TOKEN = "PRUNEKIT_TOKEN"
ENV_CA_FILE = "PRUNEKIT_CA_FILE"
ENV_CERT_FILE = "PRUNEKIT_CERT_FILE"
ENV_KEY_FILE = "PRUNEKIT_KEY_FILE"


def from_env(
    given: str | PathLike[str] | None, variable: str, env: Mapping[str, str] | None = None
) -> str | None:
    """``given`` when it is not None (``""`` meaning "none", so a caller can turn a variable off), else the
    variable's value (None when unset or empty)."""
    if given is not None:
        return os.fspath(given) or None
    return (os.environ if env is None else env).get(variable) or None


def tls_credentials(
    ca_file: str | PathLike[str] | None,
    cert_file: str | PathLike[str] | None,
    key_file: str | PathLike[str] | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ``ca_file`` (the system's roots when None) and presenting the client
    certificate ``cert_file``/``key_file`` when given; None when none of them is set (plaintext).

    ValueError when only one of ``cert_file`` and ``key_file`` is given.
    """
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if (cert_file is None) != (key_file is None):
        raise ValueError("give both cert_file and key_file, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca_file is None else Path(ca_file).read_bytes(),
        private_key=None if key_file is None else Path(key_file).read_bytes(),
        certificate_chain=None if cert_file is None else Path(cert_file).read_bytes(),
    )


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
):
    """Adds the token to the metadata of every call of the channel it intercepts."""

    def __init__(self, token: str) -> None:
        if not token or any(c in token for c in "\r\n"):
            raise ValueError("the token must be a non-empty single line")
        self._entry = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> _Details:
        metadata = [*(details.metadata or ()), self._entry]
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._with_token(details), requests)


class ChannelSecurity(NamedTuple):
    """What a :class:`prunekit.Client` was given to secure its channel; None = read the environment."""

    token: str | None
    ca_file: str | PathLike[str] | None
    cert_file: str | PathLike[str] | None
    key_file: str | PathLike[str] | None
    credentials: grpc.ChannelCredentials | None

    def channel(self, target: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        """The channel to ``target``: TLS from ``credentials``, else from the files (given or from
        ``PRUNEKIT_CA_FILE``/``_CERT_FILE``/``_KEY_FILE``), else plaintext; with the bearer token (given
        or ``PRUNEKIT_TOKEN``) on every call."""
        credentials = self.credentials or tls_credentials(
            from_env(self.ca_file, ENV_CA_FILE),
            from_env(self.cert_file, ENV_CERT_FILE),
            from_env(self.key_file, ENV_KEY_FILE),
        )
        if credentials is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, credentials, options=options)
        bearer = from_env(self.token, ENV_TOKEN)
        if bearer is not None:
            channel = grpc.intercept_channel(channel, BearerToken(bearer))
        return channel
