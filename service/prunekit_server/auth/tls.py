"""The server's TLS credentials, re-read when the certificate or key files change."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from ..config import Settings
from .watched import Watched

log = logging.getLogger(__name__)


def _configuration(paths: tuple[Path, ...]) -> grpc.ServerCertificateConfiguration:
    cert, key, *ca = (path.read_bytes() for path in paths)
    if b"-----BEGIN" not in cert or b"-----BEGIN" not in key or (ca and b"-----BEGIN" not in ca[0]):
        raise ValueError("TLS files must be PEM")
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca[0] if ca else None)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``tls_cert_file`` and ``tls_key_file`` (with client certificates required
    when ``tls_client_ca_file`` is set); None when neither file is set. Each new connection's
    handshake uses the files as they are now: a rotated certificate needs no restart.

    ValueError when only one of the pair is set, or a client CA without them.
    """
    if not settings.tls_cert_file and not settings.tls_key_file:
        if settings.tls_client_ca_file:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return None
    if not settings.tls_cert_file or not settings.tls_key_file:
        raise ValueError("set both tls_cert_file and tls_key_file, or neither")
    names = (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    watched = Watched(tuple(Path(name) for name in names if name), _configuration)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        value, changed = watched.refresh()
        if changed:
            log.info("TLS certificate files changed: new connections use them")
            return value
        return None

    return grpc.dynamic_ssl_server_credentials(
        watched.get(), fetch, require_client_authentication=bool(settings.tls_client_ca_file)
    )
