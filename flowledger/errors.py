"""The one exception root: every refusal carries a stable code, its context and
whether retrying could help, so the CLI and the services report errors the same way."""

from __future__ import annotations

from typing import Any


class FlowledgerError(Exception):
    """Root of every error flowledger raises on purpose.

    ``code`` is a stable string that scripts may match on; ``context`` holds the
    record, field or step path the error is about; ``retryable`` tells callers
    whether the same call could succeed later (a service down) or never will
    (bad input).
    """

    code: str = "FLOWLEDGER_ERROR"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.context: dict[str, Any] = context

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        for key, value in self.context.items():
            if value is not None:
                body.setdefault(key, value)
        return body

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(FlowledgerError):
    """Input that will never be accepted as it is (CLI exit 2)."""

    code = "INVALID_INPUT"


class ConfigError(FlowledgerError):
    """A setting or configuration file that cannot be used."""

    code = "CONFIG_INVALID"


class ServiceUnavailable(FlowledgerError):
    """A real service (Kafka, Temporal, the database) did not answer; a retry may help."""

    code = "SERVICE_UNAVAILABLE"
    retryable = True


class StackError(FlowledgerError):
    """The local stack could not be started, attached or stopped."""

    code = "STACK_FAILED"


class AuthenticationFailed(ServiceUnavailable):
    """A service answered but refused our credentials or certificate. The services'
    retry loops give up on it at once (the same credentials fail the same way), and
    the CLI exits 3 as for a service it cannot use."""

    code = "AUTH_FAILED"
