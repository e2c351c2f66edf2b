"""From a call's metadata and TLS peer to an :class:`Identity`, per the server's settings.

Order: a bearer token (``authorization: Bearer <token>``) when the call carries one: a static token
first, then a JWT; else the verified client certificate (mTLS), whose subject common name is the
tenant (role ``user``); else AUTH_REQUIRED.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import Settings
from .identity import ANONYMOUS, USER, Identity, invalid, make_identity, required
from .jwks import JwtRules, JwtVerifier
from .tokens import StaticTokens

log = logging.getLogger(__name__)

AUTH_NONE = "none"
AUTH_REQUIRED = "required"
_BEARER = "bearer "


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if not text.lower().startswith(_BEARER) or not text[len(_BEARER) :].strip():
                raise invalid("the authorization metadata must be 'Bearer <token>'")
            return text[len(_BEARER) :].strip()
    return None


class Authenticator:
    """Resolves callers' identities; built once per server by :meth:`from_settings`."""

    def __init__(
        self, tokens: StaticTokens | None, jwts: JwtVerifier | None, client_certificates: bool
    ) -> None:
        self._tokens = tokens
        self._jwts = jwts
        self._client_certificates = client_certificates

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator | None:
        """The settings' authenticator; None with ``auth: none``.

        ValueError for an unknown ``auth`` mode, unreadable or malformed files, or ``auth: required``
        with no credential source configured.
        """
        if settings.auth == AUTH_NONE:
            log.warning(
                "AUTHENTICATION IS OFF (PRUNEKIT_AUTH=none): every caller can read, cancel and download "
                "every job of tenant %r. Never expose this server beyond a trusted network.",
                ANONYMOUS.tenant,
            )
            return None
        if settings.auth != AUTH_REQUIRED:
            raise ValueError(f"auth must be {AUTH_REQUIRED!r} or {AUTH_NONE!r}, not {settings.auth!r}")
        tokens = StaticTokens(Path(settings.auth_tokens_file)) if settings.auth_tokens_file else None
        jwts = None
        if settings.auth_jwks_file:
            rules = JwtRules(
                settings.auth_jwt_issuer,
                settings.auth_jwt_audience,
                settings.auth_jwt_tenant_claim,
                settings.auth_jwt_role_claim,
            )
            jwts = JwtVerifier(Path(settings.auth_jwks_file), rules)
        certificates = bool(settings.tls_client_ca_file)
        if tokens is None and jwts is None and not certificates:
            raise ValueError(
                "authentication is required but no credential is configured: set PRUNEKIT_AUTH_TOKENS_FILE, "
                "PRUNEKIT_AUTH_JWKS_FILE or PRUNEKIT_TLS_CLIENT_CA_FILE, or PRUNEKIT_AUTH=none to turn it off"
            )
        return cls(tokens, jwts, certificates)

    def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], peer: Mapping[str, Sequence[bytes]]
    ) -> Identity:
        """The caller's identity; UNAUTHENTICATED (AUTH_REQUIRED or AUTH_INVALID) when there is none."""
        token = _bearer(metadata)
        if token is not None:
            return self._from_token(token)
        names = peer.get("x509_common_name") if self._client_certificates else None
        if names:
            return make_identity(names[0].decode("utf-8", "replace"), USER)
        raise required()

    def _from_token(self, token: str) -> Identity:
        if self._tokens is not None:
            found = self._tokens.identify(token)
            if found is not None:
                return found
        if self._jwts is not None and token.count(".") == 2:
            return self._jwts.identify(token)
        raise invalid("the bearer token is not known to this server")
