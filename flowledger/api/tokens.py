"""The API's bearer tokens: a JSON file holding, per token, its SHA-256 (never the
token), its role and its tenants. A token is shown once, when it is created."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowledger.codes import API_ROLE_UNKNOWN, API_TOKENS_FILE_INVALID
from flowledger.errors import ConfigError, InvalidInput

ROLES = ("publisher", "operator", "reader")
PREFIX = "flt_"


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: one token's name, role and tenants."""

    token_id: str
    name: str
    role: str
    tenants: frozenset[str]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _entries(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"API tokens file {path} cannot be read: {exc}",
            code=API_TOKENS_FILE_INVALID,
            path=str(path),
        ) from None
    found = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise ConfigError(
            f"API tokens file {path} has no list of tokens",
            code=API_TOKENS_FILE_INVALID,
            path=str(path),
        )
    return [entry for entry in found if isinstance(entry, dict)]


def create(path: Path, *, tenants: list[str], role: str, name: str | None = None) -> dict[str, Any]:
    """A new token, appended to the file (created 0600). Returns the token itself with
    its entry; only the digest is stored."""
    if role not in ROLES:
        raise InvalidInput(
            f"unknown role {role!r}; one of {', '.join(ROLES)}",
            code=API_ROLE_UNKNOWN,
            role=role,
        )
    wanted = sorted({t.strip() for t in tenants if t.strip()})
    if not wanted:
        raise InvalidInput("a token needs at least one tenant", field="--tenant")
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = uuid.uuid4().hex[:12]
    entry = {
        "id": token_id,
        "name": name or f"{role}-{token_id}",
        "role": role,
        "tenants": wanted,
        "sha256": digest(token),
        "created_at": datetime.now(UTC).isoformat(),
    }
    entries = [*_entries(path), entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"tokens": entries}, out, indent=2)
    tmp.replace(path)
    public = {k: v for k, v in entry.items() if k != "sha256"}
    return {"token": token, **public}


def names(path: Path) -> list[str]:
    return [str(entry.get("name")) for entry in _entries(path)]


class TokenStore:
    """The tokens file as the server reads it: read again whenever it changes, so a
    token created while the server runs works at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, Principal] = {}

    def _refresh(self) -> None:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        table = {}
        for entry in _entries(self.path):
            role, tenants = entry.get("role"), entry.get("tenants")
            if role not in ROLES or not isinstance(tenants, list):
                continue
            table[str(entry.get("sha256"))] = Principal(
                token_id=str(entry.get("id")),
                name=str(entry.get("name") or entry.get("id")),
                role=str(role),
                tenants=frozenset(str(t) for t in tenants),
            )
        self._by_digest, self._stamp = table, stamp

    def check(self) -> bool:
        with self._lock:
            self._refresh()
        return True

    def find(self, token: str) -> Principal | None:
        wanted = digest(token)
        with self._lock:
            self._refresh()
            known = list(self._by_digest.items())
        found = None
        for stored, principal in known:
            # Every entry compared, in constant time each.
            if hmac.compare_digest(stored, wanted):
                found = principal
        return found


DEVELOPMENT = "development"


def ensure_development(path: Path, tenants: list[str]) -> str | None:
    """The operator token `flowledger up` makes for development: created (and returned,
    to be printed this once) when the tokens file has none yet, else None."""
    if DEVELOPMENT in names(path):
        return None
    return str(create(path, tenants=tenants, role="operator", name=DEVELOPMENT)["token"])
