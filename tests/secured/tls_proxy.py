"""A TLS-terminating TCP proxy that demands a client certificate, in front of a
plaintext service (the Temporal dev server): gRPC's HTTP/2 passes through untouched,
as it would through a load balancer that does mutual TLS. It runs its own event loop
in a thread, so clients in this process and in child processes both reach it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from pathlib import Path


class TlsProxy:
    def __init__(self, upstream: str, cert: Path, key: Path, client_ca: Path) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        self._context = context
        self._loop = asyncio.new_event_loop()
        # A refused handshake is what the proxy is for: counted, not logged.
        self._loop.set_exception_handler(lambda _loop, _context: self._count())
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.refused = 0  # handshakes that failed, e.g. without a client certificate

    def start(self) -> str:
        self._thread.start()
        listening = socket.create_server(("127.0.0.1", 0))
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(
                self._serve, sock=listening, ssl=self._context, ssl_handshake_timeout=10
            ),
            self._loop,
        )
        self._server = future.result(timeout=10)
        return f"127.0.0.1:{listening.getsockname()[1]}"

    def _count(self) -> None:
        self.refused += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def close(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        # A connection reset or a failed handshake just ends this direction.
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()
