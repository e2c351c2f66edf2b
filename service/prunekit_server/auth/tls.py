"""The server's TLS credentials, re-read when the certificate or key files change."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..config import Settings
from .watched import Watched

log = logging.getLogger(__name__)


def _configuration(paths: tuple[Path, ...]) -> grpc.ServerCertificateConfiguration:
    """The files' configuration; ValueError unless they are PEM and the key is the certificate's (a
    rotation caught between its two files)."""
    cert, key, *ca = (path.read_bytes() for path in paths)
    if ca and b"-----BEGIN" not in ca[0]:
        raise ValueError("the client CA file must be PEM")
    public = serialization.load_pem_private_key(key, password=None).public_key()
    leaf = x509.load_pem_x509_certificate(cert).public_key()
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(serialization.Encoding.PEM, raw) != leaf.public_bytes(
        serialization.Encoding.PEM, raw
    ):
        raise ValueError("the TLS key does not belong to the certificate")
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
