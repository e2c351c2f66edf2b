"""The two ways DYNAMIC refuses a model or a form (``FAILED_PRECONDITION``, reasons from errors.proto)."""

from __future__ import annotations

from ...errors import Code, ServiceError

__all__ = ["form_unavailable", "not_applicable"]


def not_applicable(message: str) -> ServiceError:
    """``DYNAMIC_NOT_APPLICABLE``: no place to gate this model; ``message`` names the reason."""
    return ServiceError(Code.FAILED_PRECONDITION, "DYNAMIC_NOT_APPLICABLE", message)


def form_unavailable(form: str) -> ServiceError:
    """``DYNAMIC_FORM_UNAVAILABLE``: this server does not build ``form`` (metadata ``form``)."""
    return ServiceError(
        Code.FAILED_PRECONDITION,
        "DYNAMIC_FORM_UNAVAILABLE",
        f"dynamic form {form.upper()} is not implemented by this server; use EARLY_EXIT or TOKEN_SKIP",
        metadata={"form": form.upper()},
    )
