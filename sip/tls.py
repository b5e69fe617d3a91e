"""SIP over TLS (RFC 3261 §26, RFC 5630): listeners and outgoing connections.

Theory of operation
-------------------
TLS is TCP with a handshake in front, so the SIP side is the TCP transport
of :mod:`sip.transport` unchanged: the same Content-Length framer, the same
connection table keyed by peer address, connection reuse in both directions
(responses and in-dialog requests go back over the connection the request
came on, §18.2.2).  What this module adds:

* :func:`server_context` / :func:`client_context` build :class:`ssl.SSLContext`
  objects with the stdlib :mod:`ssl`: TLS 1.2 or later only, the system or a
  given CA bundle, and on the client side certificate *and* host-name checks
  (§26.3.1: "the client MUST verify the server's certificate").  A server may
  demand client certificates (mutual TLS, §26.3.2.2) with ``client_ca``.
* :class:`TlsSettings` tells :class:`~sip.transport.SipTransport` how to
  open outgoing ``"TLS"`` connections: the client context and the name to
  check in the server certificate for each address (``server_names``; the
  address itself otherwise, which matches an IP subjectAltName).
* :func:`listen_tls` binds a TLS listener on an existing transport
  (conventionally port 5061, §26.2.2); messages from it reach the core with
  transport ``"TLS"``, so Via says ``SIP/2.0/TLS`` and the stack answers over
  the same connection.

``sips:`` URIs (§26.2.2, §19.1): :func:`sip.dialog.uri_address` maps a
``sips:`` URI to transport ``"TLS"`` and default port 5061, so a request or
an in-dialog target in the ``sips`` scheme is only ever sent over TLS.  A
certificate that fails the checks makes the connect fail: the transaction
gets a transport error (§17.1.4: the TU sees a 503/timeout), nothing is sent
in the clear.  Once a TLS listener is enabled, the stack's Contact in
dialogs over TLS is ``sips:`` at that listener (RFC 3261 §12.1.1, RFC 5630
§4.1), so the peer's in-dialog requests also come back over TLS.  A
connection never falls back to plain TCP: a TLS send without client
settings fails like a failed handshake.  :func:`peer_certificate` and
:func:`certificate_names` give the application the identity a TLS client
proved (mutual TLS), e.g. to tie a trunk to its certificate (RFC 5922 §7).
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from .transport import SipTransport, _TcpProtocol

logger = logging.getLogger(__name__)

Address = tuple[str, int]

SIPS_PORT = 5061  # RFC 3261 §26.2.2 / §19.1.2


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server-side context: our certificate chain, TLS >= 1.2.

    Args:
        cert, key: PEM files of our certificate (chain) and private key.
        client_ca: PEM bundle; when given, clients must present a certificate
            signed by it (mutual TLS).

    Raises:
        OSError / ssl.SSLError: a file is missing or does not hold a matching pair.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: str | None = None, *, cert: str | None = None, key: str | None = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """A client-side context that verifies the server certificate.

    Args:
        ca: PEM bundle of trusted CAs (None: the system's default trust store).
        cert, key: our client certificate for servers that ask for one.
        check_hostname: also match the certificate against the name/address
            we connect to (default; turning it off is for lab setups only).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class TlsSettings:
    """How a :class:`SipTransport` opens outgoing TLS connections."""

    context: ssl.SSLContext
    """A :func:`client_context` (certificate checks on)."""
    server_names: dict[Address, str] = field(default_factory=dict)
    """Name to verify per destination address (a trunk's host name)."""
    contexts: dict[Address, ssl.SSLContext] = field(default_factory=dict)
    """A context of its own per destination (a trunk's CA bundle and client certificate)."""

    def connect_args(self, addr: Address) -> dict[str, Any]:
        """Keyword arguments for ``loop.create_connection`` to ``addr``."""
        return {"ssl": self.contexts.get(addr, self.context), "server_hostname": self.server_names.get(addr, addr[0])}


def peer_certificate(transport: SipTransport, addr: Address) -> dict[str, Any] | None:
    """The verified certificate the peer at ``addr`` presented on its TLS connection, or None.

    None for a connection that is not TLS, for a client that sent no
    certificate (the listener has no ``client_ca``), and once the connection
    is gone.  The dict is :meth:`ssl.SSLSocket.getpeercert`'s.
    """
    conn = transport._tcp_conns.get(addr)
    if conn is None or conn.name != "TLS" or conn.transport is None:
        return None
    cert = conn.transport.get_extra_info("peercert")
    return cert or None


def certificate_names(cert: dict[str, Any]) -> set[str]:
    """DNS names and IP addresses of a certificate's subjectAltName (RFC 5922 §7.1), lower-cased.

    RFC 5922 §7.1: the identities are the subjectAltName entries; the
    subject CN is consulted only when there is no subjectAltName at all.
    """
    names = {value.lower().strip() for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")}
    if not names:
        for rdn in cert.get("subject", ()):
            names.update(value.lower() for key, value in rdn if key == "commonName")
    return names


class _TlsProtocol(_TcpProtocol):
    name = "TLS"


async def listen_tls(transport: SipTransport, context: ssl.SSLContext, host: str = "127.0.0.1",
                     port: int = 0) -> Address:
    """Accept SIP over TLS on ``host:port`` (0: any free port); returns the bound address.

    The listener belongs to ``transport`` (closed by ``transport.close()``).
    """
    # A peer that never finishes its handshake is dropped after 10 s (asyncio
    # would wait 60 s): cheap protection against half-open TLS floods.
    server = await transport.loop.create_server(lambda: _TlsProtocol(transport), host, port, ssl=context,
                                                ssl_handshake_timeout=10.0)
    transport._tcp_servers.append(server)
    if transport._sweep is None:
        transport._sweep = transport.loop.call_later(transport.tcp_idle_timeout_s / 2, transport._sweep_idle)
    sock = server.sockets[0].getsockname()
    logger.info("SIP over TLS listening on %s:%d", sock[0], sock[1])
    return (sock[0], sock[1])


async def enable_tls(endpoint: Any, *, server: ssl.SSLContext | None = None,
                     client: TlsSettings | None = None, host: str | None = None, port: int = 0) -> Address | None:
    """Give a started :class:`sip.useragent.SipEndpoint` TLS.

    Args:
        endpoint: a started endpoint.
        server: listen for TLS with this context (None: outgoing only).
        client: settings for outgoing TLS connections.
        host, port: where to listen (default: the endpoint's host, any port).

    Returns:
        The TLS listener's address, or None without ``server``.
    """
    tr = endpoint.transport
    assert tr is not None, "SipEndpoint not started"
    if client is not None:
        tr.tls = client
    if server is None:
        return None
    addr = await listen_tls(tr, server, host or endpoint.host, port)
    # RFC 3261 §12.1.1 / RFC 5630 §4.1: dialogs over TLS get a sips: Contact at this listener.
    stack = endpoint.stack
    contact_host = addr[0] if addr[0] not in ("0.0.0.0", "::") else stack.local_addr[0]
    contact_host = f"[{contact_host}]" if ":" in contact_host else contact_host
    stack.tls_contact = f"<sips:{stack.user}@{contact_host}:{addr[1]}>"
    return addr
