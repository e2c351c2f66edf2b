"""Bearer JWTs signed by an issuer's keys (a JWKS file): RS256 or ES256 only, ``exp``, ``iss`` and
``aud`` required and checked (``nbf`` when present), the tenant and role read from configured claims."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .identity import USER, Identity, invalid, make_identity
from .watched import Watched

#: Asymmetric algorithms only, each with the key type it needs: never "none", never HMAC.
ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}
LEEWAY_S = 30


def parse_jwks(paths: tuple[Path, ...]) -> tuple[jwt.PyJWK, ...]:
    """The RSA and EC public keys of a JWKS file; ValueError when it holds none."""
    (path,) = paths
    try:
        data = json.loads(path.read_text())
        keys = tuple(
            jwt.PyJWK(entry)
            for entry in data.get("keys", [])
            if isinstance(entry, dict) and entry.get("kty") in ALGORITHMS.values()
        )
    except (ValueError, AttributeError, jwt.PyJWTError) as exc:
        raise ValueError(f"{path}: not a usable JWKS ({exc})") from exc
    if not keys:
        raise ValueError(f"{path}: no RSA or EC key")
    return keys


@dataclass(frozen=True)
class JwtRules:
    """What a token must carry."""

    issuer: str
    audience: str
    tenant_claim: str = "tenant"
    role_claim: str = "role"


class JwtVerifier:
    """Verifies bearer JWTs against the keys of a JWKS file, re-read when it changes."""

    def __init__(self, path: Path, rules: JwtRules) -> None:
        if not rules.issuer or not rules.audience:
            raise ValueError("auth_jwks_file needs auth_jwt_issuer and auth_jwt_audience")
        self._keys = Watched((path,), parse_jwks)
        self._rules = rules

    def identify(self, token: str) -> Identity:
        """The identity the token's claims name; AUTH_INVALID when it does not verify."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise invalid("the bearer token is not a JWT the server accepts") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise invalid(f"JWT algorithm must be one of {sorted(ALGORITHMS)}")
        claims = self._verified(token, algorithm, header.get("kid"))
        rules = self._rules
        return make_identity(claims.get(rules.tenant_claim), claims.get(rules.role_claim, USER))

    def _verified(self, token: str, algorithm: str, kid: object) -> dict[str, Any]:
        candidates = [
            key
            for key in self._keys.get()
            if key.key_type == ALGORITHMS[algorithm] and (kid is None or key.key_id == kid)
        ]
        last: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                return dict(
                    jwt.decode(
                        token,
                        key.key,
                        algorithms=[algorithm],
                        audience=self._rules.audience,
                        issuer=self._rules.issuer,
                        leeway=LEEWAY_S,
                        options={"require": ["exp", "iss", "aud"]},
                    )
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.PyJWTError as exc:
                raise invalid(f"JWT rejected: {exc}") from exc
        reason = "bad signature" if last is not None else "no key of the issuer matches"
        raise invalid(f"JWT rejected: {reason}")
