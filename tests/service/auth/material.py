"""Credentials made for a test: a CA, server and client certificates, an issuer's signing keys (a JWKS
file and JWTs signed with them) and a static tokens file."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://issuer.test"
AUDIENCE = "prunekit"
_DAY = datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Authority:
    """A CA that signs certificates into ``root``."""

    root: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, root: Path, name: str = "prunekit test CA") -> Authority:
        root.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        authority = cls(root, key, cert)
        (root / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return authority

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def issue(self, stem: str, common_name: str, *, server: bool) -> tuple[Path, Path]:
        """A certificate (``<stem>.pem``) and key (``<stem>.key``) for a server on 127.0.0.1 and
        localhost, or a client named ``common_name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.root / f"{stem}.pem", self.root / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file


@dataclass
class Issuer:
    """An RSA signing key published in a JWKS file."""

    key: rsa.RSAPrivateKey
    kid: str = "key-1"

    @classmethod
    def create(cls, jwks_file: Path) -> Issuer:
        issuer = cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key()))
        jwks_file.write_text(json.dumps({"keys": [{**public, "kid": issuer.kid, "use": "sig"}]}))
        return issuer

    def token(self, tenant: str, role: str = "user", **claims: Any) -> str:
        """A JWT for ``tenant`` valid for an hour; ``claims`` override or add to the standard ones."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"someone@{tenant}", "iat": now, "exp": now + 3600}
        body.update({"tenant": tenant, "role": role, **claims})
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


def write_tokens_file(path: Path, tokens: dict[str, tuple[str, str]]) -> Path:
    """``tokens``: token -> (tenant, role); the file lists their sha256 digests."""
    entries = [
        {"sha256": hashlib.sha256(token.encode()).hexdigest(), "tenant": tenant, "role": role}
        for token, (tenant, role) in tokens.items()
    ]
    path.write_text(yaml.safe_dump({"tokens": entries}))
    return path
