"""OpenFlow over TLS: only switches holding a certificate signed by our CA get in.

os-ken's own TLS listener cannot be used on this eventlet: it wraps eventlet's green
sockets with the standard library's blocking `ssl`, so once a switch's HELLO is read its
receive loop spins on SSLWantReadError and the controller never sends its own HELLO. This
listener wraps with eventlet's green `ssl`, bounds the handshake in time, and hands each
authenticated connection to os-ken as if it had accepted it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import eventlet
from eventlet.green import ssl
from os_ken.lib import hub

LOG = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0  # seconds a connecting switch has to finish the TLS handshake


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the controller's key and certificate, and the CA that signs switches."""

    private_key: Path
    certificate: Path
    ca_certificate: Path


class TlsSetupError(ValueError):
    """A TLS file is missing, unreadable, or does not fit the others."""


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A context for TLS 1.2 and later that requires a client certificate from our CA;
    a key that does not match its certificate is an error now, not at the first switch."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(str(files.certificate), str(files.private_key))
        context.load_verify_locations(str(files.ca_certificate))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"TLS files {files.certificate}, {files.private_key}, "
                            f"{files.ca_certificate}: {exc}") from exc
    return context


Handler = Callable[[object, tuple], None]


def serve_tls(host: str, port: int, context: ssl.SSLContext, handle: Handler,
          on_refused: Callable[[tuple, str], None]) -> None:
    """Accept forever; each connection is authenticated in its own green thread."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = eventlet.listen((host, port), family=family)
    while True:
        sock, address = listener.accept()
        hub.spawn(_authenticate, sock, address, context, handle, on_refused)


def _authenticate(sock, address: tuple, context: ssl.SSLContext, handle: Handler,
                  on_refused: Callable[[tuple, str], None]) -> None:
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        tls = context.wrap_socket(sock, server_side=True)
    except (OSError, ssl.SSLError) as exc:  # socket.timeout is an OSError
        LOG.warning("refused a TLS connection from %s:%d: %s", address[0], address[1], exc)
        on_refused(address, str(exc))
        sock.close()
        return
    handle(tls, address)
