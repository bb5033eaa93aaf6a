"""`flowledger api` in the foreground: the tables migrated (the API may start before
any projector), then uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import uvicorn

from flowledger.api.app import create_app
from flowledger.settings import Settings
from projections import migrate

log = logging.getLogger(__name__)


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return f"http://{shown}:{port}"


class ApiServer(uvicorn.Server):
    """uvicorn's server, telling where it listens once the socket is bound (with port
    0 that is the first moment the port is known)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self._announce(base_url(str(host), int(port)))
                return


def serve(settings: Settings, announce: Callable[[str], None]) -> None:
    migrate.upgrade(settings.database_url())
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level="warning",
        access_log=False,
        # Our own logging configuration (flowledger.logs) stays as it is.
        log_config=None,
    )
    ApiServer(config, announce).run()
