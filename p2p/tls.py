"""TLS for peer links (wss://): a fresh self-signed certificate per start, bound to the node key by
the handshake.

Why not a certificate authority: validators of a consortium share no CA, and the genesis already
names every validator by its Ed25519 key. Why not the node key itself as the TLS key: it would have
to be written to a file for `ssl.SSLContext.load_cert_chain`, and the node key should exist in one
file only. So each start makes a throwaway Ed25519 TLS key and a self-signed certificate; the
dialer accepts any certificate during the TLS handshake and the application handshake then binds
it: both sides put the SHA-256 of the listener's certificate (as each of them sees it) into the
transcript they sign with their node keys (`p2p.handshake`). A man in the middle that terminates
TLS shows the dialer a certificate of its own, so the two transcripts differ and both signatures
fail; one that relays the bytes cannot read them, and a byte it changes, drops, replays or reorders
fails TLS's record authentication and ends the connection.

TLS 1.3 only: every ledgerd speaks it, and it has no renegotiation or legacy cipher suites.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import shutil
import ssl
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

CERT_LIFETIME = datetime.timedelta(days=3650)  # nobody checks validity dates; the handshake pins the cert


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def server_context(node_id: str) -> tuple[ssl.SSLContext, str]:
    """A TLS 1.3 server context with a fresh certificate; and that certificate's fingerprint."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ledgerd node {node_id[:16]}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + CERT_LIFETIME)
            .sign(key, None))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # load_cert_chain reads files only: a private directory for the moment it takes, then gone.
    folder = Path(tempfile.mkdtemp(prefix="ledgerd-tls-"))
    try:
        cert_file, key_file = folder / "cert.pem", folder / "key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.touch(mode=0o600)
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context.load_cert_chain(cert_file, key_file)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return context, fingerprint(cert.public_bytes(serialization.Encoding.DER))


def client_context() -> ssl.SSLContext:
    """TLS 1.3 without CA or host name checks: the handshake checks the certificate instead."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_fingerprint(ssl_object: object) -> str:
    """The fingerprint of the certificate the other end showed on this TLS connection."""
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        raise ValueError("not a TLS connection")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise ValueError("the peer showed no certificate")
    return fingerprint(der)


def watch_client(ws: object, on_tls_error: Callable[[ssl.SSLError], None]) -> bool:
    """Tell `on_tls_error` if TLS ends this client WebSocket's connection; False if it cannot.

    aiohttp's client, like its server, reports a TLS failure as a plain close; the error reaches
    only its connection protocol. There is no public hook for that, so this wraps the protocol's
    connection_lost. If aiohttp's internals change, the link is still dropped on a bad record (TLS
    does that); it is only no longer counted as tampered on the dialing side.
    """
    protocol = getattr(getattr(getattr(ws, "_response", None), "connection", None), "protocol", None)
    original = getattr(protocol, "connection_lost", None)
    if protocol is None or original is None:
        return False

    def connection_lost(exc: BaseException | None) -> None:
        if isinstance(exc, ssl.SSLError):
            on_tls_error(exc)
        original(exc)

    protocol.connection_lost = connection_lost
    return True


class TlsAcceptor(asyncio.Protocol):
    """One accepted TCP connection of a wss:// listener, until and after its TLS handshake.

    TLS is started here (`loop.start_tls`) rather than by the server, so that the raw connection is
    ours to close while its handshake is still under way: the listener's bound on idle connections
    (see `p2p.node.P2PNode._new_protocol`) must reach a client that opened TCP and sent nothing. Once
    the handshake is done, everything is passed to `inner` (aiohttp's HTTP protocol). It also tells
    `on_tls_error` why TLS ended a connection: a record that failed authentication (changed,
    replayed, reordered or injected on the path), which aiohttp itself reports as a plain close.
    """

    def __init__(self, inner: asyncio.Protocol, context: ssl.SSLContext, handshake_timeout_s: float,
                 on_tls_error: Callable[[asyncio.Protocol, ssl.SSLError], None],
                 spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self.inner = inner
        self._context = context
        self._timeout_s = handshake_timeout_s
        self._on_tls_error = on_tls_error
        self._spawn = spawn
        self._raw: asyncio.BaseTransport | None = None
        self.ready = False  # the TLS handshake is done and `inner` has its transport
        self._early: list[bytes] = []  # decrypted bytes that came before `inner` was connected
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw is None:
            self._raw = transport
            self._spawn(self._start_tls(transport))
        else:
            self._connect_inner(transport)  # some Python versions report the TLS transport here

    async def _start_tls(self, raw: asyncio.BaseTransport) -> None:
        assert isinstance(raw, asyncio.Transport)
        try:
            secure = await asyncio.get_running_loop().start_tls(
                raw, self, self._context, server_side=True, ssl_handshake_timeout=self._timeout_s)
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError, RuntimeError):
            raw.close()  # a failed or slow TLS handshake: nothing was served yet
            return
        if secure is None:
            raw.close()
            return
        self._connect_inner(secure)

    def _connect_inner(self, transport: asyncio.BaseTransport) -> None:
        if self.ready:
            return
        self.ready = True
        self.inner.connection_made(transport)
        for chunk in self._early:
            self.inner.data_received(chunk)
        self._early.clear()
        if self._early_eof:
            self.inner.eof_received()

    def close(self) -> None:
        """Close the raw connection (used on one still in its TLS handshake)."""
        if self._raw is not None:
            self._raw.close()

    def is_closing(self) -> bool:
        return self._raw is not None and self._raw.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.ready:
            self.inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self.ready:
            return self.inner.eof_received()
        self._early_eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, ssl.SSLError):
            self._on_tls_error(self.inner, exc)
        if self.ready:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.ready:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.ready:
            self.inner.resume_writing()
