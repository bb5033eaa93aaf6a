"""Why a TLS connection to Temporal failed, asked of the endpoint itself. The SDK's
core reports a server that refuses our client certificate as a bare transport error
("broken pipe", "unexpected EOF"): with TLS 1.3 the server says no only after the
client's half of the handshake is done. A handshake of our own, followed by a read,
hears the server's alert, or its silence: an HTTP/2 server speaks first (its
SETTINGS frame), so one that hangs up on a client without a certificate instead
wants a certificate."""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path

from temporalio.service import TLSConfig

TIMEOUT_S = 3.0


def refusal(address: str, tls: TLSConfig | bool, *, certificate_expected: bool) -> str | None:
    """The reason the endpoint refuses this TLS configuration, or None when it does
    not (or cannot be reached at all, which is not a refusal)."""
    host, _, port = address.rpartition(":")
    try:
        context = _context(tls)
        with (
            socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=_server_name(host, tls)) as conn,
        ):
            conn.settimeout(TIMEOUT_S)
            answered = conn.recv(1)
        if not answered and certificate_expected and not _has_client_cert(tls):
            return "it closed the connection after the handshake: it wants a client certificate"
    except ssl.SSLCertVerificationError as exc:
        return f"the server's certificate is not trusted ({exc.verify_message})"
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).replace("_", " ").lower()
        if "certificate" in reason or "alert" in reason:
            return f"the TLS handshake was refused: {reason}"
        return None
    except (OSError, ValueError):
        return None
    return None


def _has_client_cert(tls: TLSConfig | bool) -> bool:
    return isinstance(tls, TLSConfig) and bool(tls.client_cert)


def _server_name(host: str, tls: TLSConfig | bool) -> str:
    if isinstance(tls, TLSConfig) and tls.domain:
        return tls.domain
    return host


def _context(tls: TLSConfig | bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2"])
    if not isinstance(tls, TLSConfig):
        return context
    if tls.server_root_ca_cert:
        context.load_verify_locations(cadata=tls.server_root_ca_cert.decode("utf-8"))
    if tls.client_cert and tls.client_private_key:
        # ssl loads a certificate chain only from files: private, and gone at once.
        with tempfile.TemporaryDirectory() as folder:
            cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
            cert.write_bytes(tls.client_cert)
            key.touch(mode=0o600)
            key.write_bytes(tls.client_private_key)
            context.load_cert_chain(cert, key)
    return context
