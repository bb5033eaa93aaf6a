"""The one exception root: every refusal carries a stable code (the constants of each
area's `codes` module), its context, whether retrying could help, an HTTP-style status
and the CLI's exit code, so the CLI, the API and the services report errors alike."""

from __future__ import annotations

from typing import Any, Final

from flowledger.codes import (
    AUTH_FAILED,
    CONFIG_INVALID,
    FLOWLEDGER_ERROR,
    INVALID_INPUT,
    SERVICE_UNAVAILABLE,
    STACK_FAILED,
)

# The CLI's exit codes: the one mapping from errors to them is FlowledgerError.exit.
EXIT_OK: Final = 0
EXIT_CHECK_FAILED: Final = 1
EXIT_REFUSED: Final = 2
EXIT_UNAVAILABLE: Final = 3


class FlowledgerError(Exception):
    """Root of every error flowledger raises on purpose.

    ``code`` is a stable string that scripts may match on; ``context`` holds the
    record, field or step path the error is about; ``retryable`` tells callers
    whether the same call could succeed later (a service down) or never will
    (bad input).
    """

    code: str = FLOWLEDGER_ERROR
    retryable: bool = False
    # HTTP-style: what the API answers, and what run-control errors report.
    status: int = 400
    # Exit code when not retryable (a retryable error always exits EXIT_UNAVAILABLE).
    exit_code: int = EXIT_REFUSED

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        status: int | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        if status is not None:
            self.status = status
        self.context: dict[str, Any] = context

    @property
    def exit(self) -> int:
        """The CLI's exit code: 3 for a service that may answer later, else the class's
        (2 refused input, 1 a check that found a problem)."""
        return EXIT_UNAVAILABLE if self.retryable else self.exit_code

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.retryable:
            body["retryable"] = True
        for key, value in self.context.items():
            if value is not None:
                body.setdefault(key, value)
        return body

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(FlowledgerError):
    """Input that will never be accepted as it is (CLI exit 2)."""

    code = INVALID_INPUT


class ConfigError(FlowledgerError):
    """A setting or configuration file that cannot be used."""

    code = CONFIG_INVALID


class ServiceUnavailable(FlowledgerError):
    """A real service (Kafka, Temporal, the database) did not answer; a retry may help."""

    code = SERVICE_UNAVAILABLE
    retryable = True
    status = 503


class StackError(FlowledgerError):
    """The local stack could not be started, attached or stopped."""

    code = STACK_FAILED
    status = 500


class NotFound(FlowledgerError):
    """The thing asked for does not exist (a run, a task, a definition)."""

    status = 404


class Conflict(FlowledgerError):
    """Refused because of the state things are in; nothing was changed."""

    status = 409


class CheckFailed(FlowledgerError):
    """A check ran and found a problem (`replay verify`, `runs wait` timing out)."""

    status = 422
    exit_code = EXIT_CHECK_FAILED


class AuthenticationFailed(ServiceUnavailable):
    """A service answered but refused our credentials or certificate. The services'
    retry loops give up on it at once (the same credentials fail the same way); the
    CLI exits 3 as for a service it cannot use, since new credentials may succeed."""

    code = AUTH_FAILED
    status = 401
