"""/metrics, /healthz and /readyz of one long-running service, on one port, served
from a daemon thread (prometheus-client's own server answers /metrics only)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from flowledger.codes import METRICS_PORT_UNAVAILABLE
from flowledger.errors import ConfigError

log = logging.getLogger(__name__)

# Each check is a name and whether it holds; ready only when all of them do.
Readiness = Callable[[], Mapping[str, bool]]
# More exposition text appended to /metrics (the Temporal SDK's own endpoint).
Extra = Callable[[], bytes]


def outcome_label(outcome: str) -> str:
    """A delivery outcome as a label value: `failed: NOT_FOUND` is `failed`, so the
    label keeps a small, fixed set of values."""
    return outcome.split(":", 1)[0].strip() or "unknown"


class HealthServer:
    def __init__(
        self,
        name: str,
        registry: CollectorRegistry,
        ready: Readiness,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra: Extra | None = None,
    ) -> None:
        self.name = name
        self.registry = registry
        self.ready = ready
        self.extra = extra
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._bound = 0

    @property
    def url(self) -> str:
        """The /metrics URL (the other two paths sit beside it); kept after close."""
        assert self._bound, "not started"
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        return f"http://{host}:{self._bound}/metrics"

    def start(self) -> str:
        try:
            server = ThreadingHTTPServer((self._host, self._port), _handler(self))
        except OSError as exc:
            raise ConfigError(
                f"{self.name} cannot serve its metrics on {self._host}:{self._port}: "
                f"{exc.strerror or exc}",
                code=METRICS_PORT_UNAVAILABLE,
                host=self._host,
                port=self._port,
            ) from None
        server.daemon_threads = True
        self._server = server
        self._bound = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"{self.name}-metrics", daemon=True
        )
        self._thread.start()
        log.info("%s: metrics on %s", self.name, self.url)
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def metrics_text(self) -> bytes:
        text = generate_latest(self.registry)
        if self.extra is not None:
            try:
                text += self.extra()
            except Exception as exc:
                # Our own families still go out; the missing part is in the log.
                log.warning("%s: extra metrics unavailable: %s", self.name, exc)
        return text

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        try:
            checks = dict(self.ready())
        except Exception as exc:
            return False, {"ready": False, "error": f"{type(exc).__name__}: {exc}"}
        ok = bool(checks) and all(checks.values())
        return ok, {"ready": ok, "checks": checks}


def _handler(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                # Always the text format: the SDK's part is text too, and an OpenMetrics
                # body would end at its "# EOF" before that part.
                self._send(200, CONTENT_TYPE_LATEST, owner.metrics_text())
            elif path == "/healthz":
                self._json(200, {"alive": True, "service": owner.name})
            elif path == "/readyz":
                ok, body = owner.readiness()
                self._json(200 if ok else 503, {**body, "service": owner.name})
            else:
                self._json(
                    404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]}
                )

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(body).encode() + b"\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s: " + format, owner.name, *args)

    return Handler
