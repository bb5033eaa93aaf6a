"""A database that refuses our password or TLS setup is one clear error with a
stable code, not a driver traceback and not something to wait out: the engines of
projections.db raise it from the connection attempt itself."""

from __future__ import annotations

from typing import Any

from flowledger.errors import AuthenticationFailed
from projections.codes import DATABASE_AUTH_FAILED

# 28P01 invalid_password, 28000 invalid_authorization_specification (pg_hba said no).
_SQLSTATES = frozenset({"28P01", "28000"})
# libpq reports the client side of a TLS failure (no TLS on the server, a certificate
# it cannot verify) before any SQLSTATE exists.
_PHRASES = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not support ssl",
    "certificate verify failed",
    "root certificate file",
    "no password supplied",
)


def refused(exc: BaseException) -> AuthenticationFailed | None:
    state = getattr(exc, "sqlstate", None)
    text = " ".join(str(exc).split())
    if state not in _SQLSTATES and not any(p in text.lower() for p in _PHRASES):
        return None
    # The driver's message names host, port, user and database, never the password.
    reason = text.split("FATAL:", 1)[-1].strip()
    return AuthenticationFailed(
        f"the projection database refused the connection: {reason}",
        code=DATABASE_AUTH_FAILED,
    )


def refuse_on_auth_failure(context: Any) -> None:
    """SQLAlchemy's handle_error hook: an exception raised here replaces the original."""
    if context.is_disconnect:
        return  # a connection lost (the server restarting) is for the retries
    failure = refused(context.original_exception)
    if failure is not None:
        raise failure from None
