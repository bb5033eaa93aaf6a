"""Who may do what: a bearer token (or, for the inbox's pages, the same token in a
cookie) names a principal; a role grants permissions; a tenant outside the token's
is answered as if its runs and tasks did not exist."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import Request

from flowledger.api.tokens import Principal, TokenStore
from flowledger.codes import API_FORBIDDEN, API_TENANT_FORBIDDEN, API_UNAUTHENTICATED
from flowledger.errors import FlowledgerError

COOKIE = "flowledger_token"

READ = "read"
PUBLISH = "publish"
OPERATE = "operate"
PERMISSIONS = {
    "reader": frozenset({READ}),
    "publisher": frozenset({READ, PUBLISH}),
    "operator": frozenset({READ, PUBLISH, OPERATE}),
}


class Unauthenticated(FlowledgerError):
    code = API_UNAUTHENTICATED
    status = 401


class Forbidden(FlowledgerError):
    code = API_FORBIDDEN
    status = 403


def _presented(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else ""
    if request.url.path.startswith("/ui/"):
        return request.cookies.get(COOKIE)
    return None


def principal_of(request: Request) -> Principal:
    token = _presented(request)
    if not token:
        raise Unauthenticated("a bearer token is required (Authorization: Bearer …)")
    store: TokenStore = request.app.state.tokens
    found = store.find(token)
    if found is None:
        raise Unauthenticated("the bearer token is not known")
    return found


def require(permission: str) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        principal = principal_of(request)
        if permission not in PERMISSIONS.get(principal.role, frozenset()):
            raise Forbidden(
                f"the {principal.role} role may not {permission}",
                role=principal.role,
                permission=permission,
            )
        return principal

    return dependency


def tenant_scope(principal: Principal, wanted: str | None) -> tuple[str, ...]:
    """The tenants a listing covers: the token's, narrowed to ``wanted`` if given
    (another tenant's name narrows it to nothing)."""
    if wanted is None:
        return tuple(sorted(principal.tenants))
    return (wanted,) if wanted in principal.tenants else ()


def check_tenants(principal: Principal, tenants: Iterable[str]) -> None:
    """For requests that name their tenant (an event, a definition, a start): acting
    for another tenant is forbidden outright; nothing of the request is done."""
    foreign = sorted({t for t in tenants if t not in principal.tenants})
    if foreign:
        raise Forbidden(
            f"this token may not act for tenant(s) {', '.join(foreign)}",
            code=API_TENANT_FORBIDDEN,
            tenants=foreign,
        )
