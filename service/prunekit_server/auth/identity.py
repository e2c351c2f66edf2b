"""The caller's identity (tenant and role), as every handler of a call sees it."""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass

from ..errors import Code, ServiceError
from ..jobs.durable.keys import DEFAULT_TENANT

USER = "user"
ADMIN = "admin"
ROLES = frozenset({USER, ADMIN})
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class Identity:
    """A tenant (its stores: ``tenants/<tenant>/``) and a role (``user`` or ``admin``)."""

    tenant: str
    role: str = USER
    #: Quotas of this credential's tenant that replace the server's (``quota_active_jobs``,
    #: ``quota_stored_bytes``); None = the server's.
    quota_active_jobs: int | None = None
    quota_stored_bytes: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


ANONYMOUS = Identity(DEFAULT_TENANT, USER)
"""Every caller when authentication is off (``auth: none``)."""

_current: contextvars.ContextVar[Identity] = contextvars.ContextVar("prunekit_identity")


def invalid(message: str) -> ServiceError:
    """UNAUTHENTICATED AUTH_INVALID: a credential was presented and not accepted."""
    return ServiceError(Code.UNAUTHENTICATED, "AUTH_INVALID", message)


def required() -> ServiceError:
    """UNAUTHENTICATED AUTH_REQUIRED: no credential was presented."""
    return ServiceError(
        Code.UNAUTHENTICATED,
        "AUTH_REQUIRED",
        "this server requires a credential: a bearer token (authorization metadata) or a client certificate",
    )


def make_identity(tenant: object, role: object = USER) -> Identity:
    """An identity from a credential's claims; AUTH_INVALID for a tenant that is not a safe name
    (letters, digits, ``_.-``, at most 63, starting alphanumeric) or a role other than user/admin."""
    if not isinstance(tenant, str) or _TENANT.fullmatch(tenant) is None:
        raise invalid("the credential names no valid tenant")
    if role not in ROLES:
        raise invalid(f"the credential's role must be one of {sorted(ROLES)}")
    return Identity(tenant, str(role))


def current() -> Identity:
    """The identity of the call this thread serves; :data:`ANONYMOUS` outside an authenticated call."""
    return _current.get(ANONYMOUS)


def bind(identity: Identity) -> contextvars.Token[Identity]:
    """Make ``identity`` the current one until :func:`unbind` with the returned token."""
    return _current.set(identity)


def unbind(token: contextvars.Token[Identity]) -> None:
    _current.reset(token)
