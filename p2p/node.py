"""`P2PNode`: the listener, the dialers and the set of live connections of one node."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver

from ledger import keys
from ledger.tx import CHAIN_ID_RE
from p2p import frames, handshake, limits, tls
from p2p.config import P2PConfig
from p2p.connection import Counters, Handler, PeerConnection, WebSocket, close_websocket
from p2p.errors import HandshakeError, PeerUnavailable, RequestTimeout

log = logging.getLogger(__name__)

P2P_PATH = "/p2p/v1"

COUNTER_NAMES: tuple[str, ...] = (
    "handshake_ok",
    "handshake_failed",
    # handshake_failed_<code>: one per HandshakeError code
    "handshake_failed_timeout",
    "handshake_failed_malformed",
    "handshake_failed_bad_signature",
    "handshake_failed_version",
    "handshake_failed_not_allowed",
    "handshake_failed_wrong_chain",
    "handshake_failed_wrong_peer",
    "handshake_failed_penalized",
    "handshake_failed_closed",
    "handshake_failed_busy",
    # refused before the upgrade (see p2p.limits), or dropped for a newer claim of the same id
    "handshake_failed_busy_source",
    "handshake_failed_rate_limited",
    "handshake_failed_evicted",
    "handshake_failed_wrong_claim",
    "dial_failed",
    "dial_failed_dns",  # the peer's host name did not resolve (also counted in dial_failed)
    "connections_opened",
    "connections_closed",
    "connections_replaced",
    "connections_refused_duplicate",
    "connections_refused_observer_limit",
    "connections_evicted_idle",  # closed for a newer one: too many had not sent their upgrade request
    "peers_disconnected_bad_frames",
    # a TLS record that failed authentication (changed, replayed, reordered or injected on the path)
    "links_dropped_tampered",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "frames_dropped_malformed",
    "frames_dropped_version",
    "frames_dropped_oversize",
    "frames_dropped_unexpected",
    "messages_in",
    "messages_out",
    "deliver_errors",
    "queue_full",
    "send_not_connected",
    "send_too_large",
    "send_timeout",
    "requests_out",
    "requests_timeout",
    "requests_failed",
    "requests_in",
    "requests_busy",
    "requests_no_handler",
    "requests_handler_error",
    "requests_handler_timeout",
    "responses_unmatched",
)

OnMessage = Callable[[str, str, bytes], None]

_REFUSALS: Mapping[str, str] = MappingProxyType({
    "rate_limited": "too many connection attempts from this address",
    "busy_source": "too many handshakes in progress from this address",
    "busy": "too many handshakes in progress",
})


class Backoff:
    """Reconnect delays: uniform in [b/2, b], b doubling from min_s up to max_s (jitter keeps a
    cluster that lost a peer from redialing it in lockstep)."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        self._min_s, self._max_s, self._rng = min_s, max_s, rng
        self._current_s = min_s

    def next_delay(self) -> float:
        delay = self._current_s * (0.5 + 0.5 * self._rng.random())
        self._current_s = min(self._max_s, self._current_s * 2)
        return delay

    def reset(self) -> None:
        self._current_s = self._min_s


@dataclass
class _Penalty:
    level: int = 0
    until: float = 0.0  # loop time


@dataclass
class _DialState:
    attempts: int = 0
    next_attempt_at: float = 0.0  # loop time
    last_error: str = ""
    unresolved: bool = False  # the last attempt could not resolve the host name (logged once per streak)


def _peer_url(node_id: str, url: str, allow_plaintext: bool) -> str:
    """`url` checked, with the p2p path added when it has none."""
    bad = ValueError(f"peer {node_id[:16]}…: url {url!r} is not ws://host:port or wss://host:port")
    try:
        parsed = urlsplit(url)
        port = parsed.port
    except ValueError as exc:
        raise bad from exc
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname or port is None or parsed.query:
        raise bad
    if parsed.scheme == "ws" and not allow_plaintext:
        raise ValueError(f"peer {node_id[:16]}…: url {url!r} is plain ws://, which this node does not speak "
                         "(use wss://, or turn TLS off for loopback tests)")
    return parsed._replace(path=P2P_PATH).geturl() if parsed.path in ("", "/") else url


class P2PNode:
    """Authenticated WebSocket links to every other validator (and configured observers).

    Delivery callbacks (`on_message`, request handlers) run on the event loop; `on_message` must
    return quickly (enqueue and go), because the connection reads nothing while it runs.
    `rng` only jitters reconnect delays; handshake challenges come from the OS CSPRNG.
    One start/stop cycle per object: to restart, build a new P2PNode (the same port may be reused).
    Every task it creates (dialers, per-connection reader/writer/request tasks, inbound handlers)
    is owned by it or by a connection, and `stop()` cancels and awaits all of them.
    """

    def __init__(
        self,
        config: P2PConfig,
        key: keys.PrivateKey,
        chain_id: str,
        validators: Iterable[str],
        peers: Mapping[str, str],
        on_message: OnMessage,
        rng: random.Random | None = None,
        observers: Iterable[str] = (),
        resolver: AbstractResolver | None = None,
    ) -> None:
        if not CHAIN_ID_RE.fullmatch(chain_id):
            raise ValueError(f"bad chain_id {chain_id!r}")
        self.validators = frozenset(validators)
        self.observers = frozenset(observers) - self.validators
        for node_id in self.validators | self.observers:
            if not keys.is_address(node_id):
                raise ValueError(f"bad node id {node_id!r}: expected 64 lowercase hex characters")
        self.config = config
        self.node_id = key.address
        self.chain_id = chain_id
        self._ident = handshake.Identity(key, chain_id, self.validators | self.observers, config.open_observers)
        self._peer_urls: dict[str, str] = {}
        self._on_message = on_message
        self._rng = rng if rng is not None else random.Random()
        self._counters = Counters(COUNTER_NAMES)
        self.counters = self._counters.values
        self._handlers: dict[str, Handler] = {}
        self._conns: dict[str, PeerConnection] = {}
        self._penalties: dict[str, _Penalty] = {}
        self._dial_states: dict[str, _DialState] = {}
        self._request_ids = itertools.count(1)
        self._pending_requests = 0
        self._admission = limits.Admission(
            max_pending=config.max_pending_handshakes,
            max_pending_per_source=config.max_pending_handshakes_per_source,
            max_pending_per_peer=config.max_pending_handshakes_per_peer,
            rate_per_s=config.connect_rate_per_source, burst=config.connect_burst_per_source,
            max_sources=config.max_tracked_sources)
        self._deadlines: dict[limits.Ticket, asyncio.Timeout] = {}  # of inbound handshakes in progress
        # Inbound TCP connections that have not sent their upgrade request yet, oldest first.
        self._idle: OrderedDict[web.RequestHandler, float] = OrderedDict()  # -> accepted at (loop time)
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # dialers
        self._inbound: set[asyncio.Task[Any]] = set()  # aiohttp handler tasks serving inbound peers
        self._state = "new"
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None
        self._server_tls: ssl.SSLContext | None = None
        self._channel = ""  # our TLS certificate's fingerprint, bound by every inbound handshake
        # Inbound connections in _accept, and why TLS failed on one of them (see tls.TlsAcceptor).
        self._serving_handlers: set[web.RequestHandler] = set()
        self._tls_errors: dict[web.RequestHandler, ssl.SSLError] = {}
        # The TLS side of each idle inbound connection, and the tasks running TLS handshakes.
        self._acceptors: dict[web.RequestHandler, tls.TlsAcceptor] = {}
        self._tls_starts: set[asyncio.Task[None]] = set()
        self._client_tls = tls.client_context()
        self._resolver = resolver  # None: the system's (getaddrinfo); tests plug in their own names
        for node_id, url in peers.items():
            self.add_peer(node_id, url)  # ourselves is skipped: one cluster-wide peer list is convenient

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound p2p port (useful when the config asked for port 0)."""
        if self._port is None:
            raise RuntimeError("P2PNode is not started")
        return self._port

    @property
    def max_payload_bytes(self) -> int:
        """The largest payload `send`, `broadcast`, `request` or a handler's answer can carry."""
        return self.config.max_frame_bytes - frames.MAX_OVERHEAD_BYTES

    @property
    def _preauth_timeout_s(self) -> float:
        return min(self.config.hello_timeout_s, self.config.handshake_timeout_s)

    @property
    def url(self) -> str:
        """The URL peers dial to reach this node (with the listen host as configured)."""
        scheme = "wss" if self.config.tls else "ws"
        return f"{scheme}://{self.config.listen_host}:{self.port}{P2P_PATH}"

    async def start(self) -> None:
        """Bind the listener and start dialing every configured peer."""
        if self._state != "new":
            raise RuntimeError(f"P2PNode.start() called in state {self._state!r}")
        app = web.Application()
        app.router.add_get(P2P_PATH, self._accept)
        # keepalive_timeout also closes a raw TCP client that never completes its upgrade request
        # (aiohttp closes a connection still waiting for its first request when it expires).
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               keepalive_timeout=self._preauth_timeout_s,
                               shutdown_timeout=self.config.close_timeout_s)
        await runner.setup()
        self._runner = runner
        if self.config.tls:
            self._server_tls, self._channel = tls.server_context(self.node_id)
        try:
            family = socket.AF_INET6 if ":" in self.config.listen_host else socket.AF_INET
            sock = socket.create_server((self.config.listen_host, self.config.listen_port), family=family)
            # Our own listener rather than a web site: every accepted connection passes through
            # _new_protocol, which bounds the connections that have not asked for anything yet.
            # TLS, when on, is started per connection by tls.TlsAcceptor (see _new_protocol).
            self._listener = await asyncio.get_running_loop().create_server(self._new_protocol, sock=sock)
        except BaseException:
            self._runner = None
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        # No DNS cache: a peer's host name is resolved again on every attempt, so a validator whose
        # address changed (a rescheduled container or pod) is found at its new one.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(use_dns_cache=False, resolver=self._resolver),
            timeout=aiohttp.ClientTimeout(total=None, connect=self.config.handshake_timeout_s))
        self._state = "running"
        for node_id in self._peer_urls:
            self._spawn(self._dial_loop(node_id), f"p2p-dial-{node_id[:8]}")
        log.info("p2p %s listening on %s", self.node_id[:16], self.url)

    async def stop(self) -> None:
        """Close every connection and the listener; cancel and await every task this node owns."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopping"
        conns = list(self._conns.values())
        for conn in conns:
            conn.close(handshake.CLOSE_GOING_AWAY, "shutdown")
        try:
            # Each connection's own close is bounded by close_timeout_s; this is a safety margin.
            async with asyncio.timeout(2 * self.config.close_timeout_s):
                await asyncio.gather(*(conn.closed.wait() for conn in conns))
        except TimeoutError:
            log.warning("p2p %s: connections did not close in time; cancelling them", self.node_id[:16])
        owned = [*self._tasks, *self._inbound, *self._tls_starts]
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
        assert self._runner is not None and self._session is not None and self._listener is not None
        self._listener.close()  # stop accepting; the runner then closes what is still open
        await self._runner.cleanup()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout_s):
                await self._listener.wait_closed()
        self._idle.clear()
        self._acceptors.clear()
        await self._session.close()
        self._conns.clear()
        self._state = "stopped"
        log.info("p2p %s stopped", self.node_id[:16])

    def _new_protocol(self) -> asyncio.BaseProtocol:
        """A protocol for one accepted TCP connection; evicts the oldest idle one when too many are.

        An idle connection (no upgrade request yet) is closed anyway after the pre-auth deadline,
        but thousands held open at once would cost a file descriptor each and could exhaust them.
        Closing the oldest rather than refusing the newest keeps the port open to a validator
        whatever a flood holds: a genuine dialer sends its request at once and stops being idle.
        """
        assert self._runner is not None and self._runner.server is not None
        now = asyncio.get_running_loop().time()
        if len(self._idle) >= self.config.max_idle_connections:
            for old, accepted_at in list(self._idle.items()):
                acceptor = self._acceptors.get(old)
                if acceptor is not None and not acceptor.ready:
                    gone = acceptor.is_closing()  # still in its TLS handshake
                else:
                    # No transport: closed since, unless accepted a moment ago and not yet connected.
                    gone = old.transport.is_closing() if old.transport is not None else now - accepted_at > 0.1
                if gone:
                    self._forget_idle(old)
        if len(self._idle) >= self.config.max_idle_connections:
            oldest = next(iter(self._idle))
            acceptor = self._acceptors.get(oldest)
            self._forget_idle(oldest)
            if acceptor is not None and not acceptor.ready:
                acceptor.close()
            else:
                oldest.force_close()
            self._counters.add("connections_evicted_idle")
        handler = self._runner.server()
        self._idle[handler] = now
        if self._server_tls is None:
            return handler
        acceptor = tls.TlsAcceptor(handler, self._server_tls, self._preauth_timeout_s, self._on_tls_error,
                                   self._spawn_tls_start)
        self._acceptors[handler] = acceptor
        return acceptor

    def _forget_idle(self, handler: web.RequestHandler) -> None:
        self._idle.pop(handler, None)
        self._acceptors.pop(handler, None)

    def _spawn_tls_start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="p2p-tls-accept")
        self._tls_starts.add(task)
        task.add_done_callback(self._tls_starts.discard)

    def _on_tls_error(self, handler: asyncio.Protocol, exc: ssl.SSLError) -> None:
        if isinstance(handler, web.RequestHandler) and handler in self._serving_handlers:
            self._tls_errors[handler] = exc

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("p2p task %s failed", task.get_name(), exc_info=task.exception())

    def set_validators(self, validators: Iterable[str]) -> None:
        """The validator set changed: consensus broadcasts reach the new set from now on; a link to a
        former validator stays, as an observer's (it counts towards the observer limit from now on)."""
        self.validators = frozenset(validators)
        self.observers = (self.observers | set(self._peer_urls)) - self.validators
        self._ident = dataclasses.replace(self._ident, allowed=self.validators | self.observers)

    def add_peer(self, peer_id: str, url: str) -> None:
        """Dial `peer_id` at `url` from now on (or at the new url, if it was known already)."""
        if peer_id == self.node_id:
            return
        if peer_id not in self._ident.allowed:
            raise ValueError(f"peer {peer_id[:16]}… is neither a validator nor an observer")
        self._peer_urls[peer_id] = _peer_url(peer_id, url, allow_plaintext=not self.config.tls)
        if peer_id not in self._dial_states:
            self._dial_states[peer_id] = _DialState()
            if self._state == "running":
                self._spawn(self._dial_loop(peer_id), f"p2p-dial-{peer_id[:8]}")

    # --- sending --------------------------------------------------------------------------------

    def send(self, peer_id: str, topic: str, payload: bytes) -> bool:
        """Queue a gossip message for one peer; False (counted) if not connected, too big or queue full."""
        frame = frames.encode_message(topic, payload)
        conn = self._conns.get(peer_id)
        if conn is None:
            self._counters.add("send_not_connected")
            return False
        if len(frame) > self.config.max_frame_bytes:
            self._counters.add("send_too_large")
            return False
        if not conn.enqueue(frame):
            return False
        self._counters.add("messages_out")
        return True

    def broadcast(self, topic: str, payload: bytes, *, include_observers: bool = True) -> int:
        """Queue a gossip message for every connected peer; returns how many queued it."""
        frame = frames.encode_message(topic, payload)
        if len(frame) > self.config.max_frame_bytes:
            self._counters.add("send_too_large")
            return 0
        sent = 0
        for peer_id, conn in list(self._conns.items()):
            if (include_observers or peer_id in self.validators) and conn.enqueue(frame):
                sent += 1
        self._counters.add("messages_out", sent)
        return sent

    def register_handler(self, topic: str, handler: Handler) -> None:
        """Serve requests on `topic`: `await handler(peer_id, payload) -> bytes`.

        Raise `RequestRefused(code, message)` to answer with an error the requester sees as
        `RemoteError(code)`; any other exception answers "handler_error" and is logged here.
        """
        if not frames.is_topic(topic):
            raise ValueError(f"bad topic {topic!r}: must match {frames.TOPIC_PATTERN}")
        if topic in self._handlers:
            raise ValueError(f"a handler for topic {topic!r} is already registered")
        self._handlers[topic] = handler

    async def request(self, peer_id: str, topic: str, payload: bytes,
                      timeout_s: float | None = None) -> bytes:
        """Ask one peer and await its answer.

        Raises RequestTimeout, PeerUnavailable (not connected, disconnected, queue full, too many
        requests, too large, stopped) or RemoteError (the peer's handler refused or failed).
        """
        if self._state != "running":
            raise PeerUnavailable("stopped", "the p2p node is not running")
        conn = self._conns.get(peer_id)
        if conn is None:
            self._counters.add("requests_failed")
            raise PeerUnavailable("not_connected", f"not connected to {peer_id[:16]}…")
        if self._pending_requests >= self.config.max_pending_requests:
            self._counters.add("requests_failed")
            raise PeerUnavailable("too_many_requests", "too many requests outstanding")
        request_id = next(self._request_ids)
        frame = frames.encode_request(topic, request_id, payload)
        if len(frame) > self.config.max_frame_bytes:
            self._counters.add("send_too_large")
            raise PeerUnavailable("too_large", f"request of {len(payload)} bytes exceeds the frame limit")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.pending[request_id] = future
        if not conn.enqueue(frame):
            del conn.pending[request_id]
            self._counters.add("requests_failed")
            raise PeerUnavailable("queue_full", f"send queue to {peer_id[:16]}… is full")
        self._counters.add("requests_out")
        self._pending_requests += 1
        try:
            async with asyncio.timeout(self.config.request_timeout_s if timeout_s is None else timeout_s):
                return await future
        except TimeoutError:
            self._counters.add("requests_timeout")
            raise RequestTimeout("timeout", f"no answer from {peer_id[:16]}… on {topic!r}") from None
        except PeerUnavailable:
            self._counters.add("requests_failed")
            raise
        finally:
            self._pending_requests -= 1
            conn.pending.pop(request_id, None)

    # --- status ---------------------------------------------------------------------------------

    def connected_peers(self) -> list[str]:
        return sorted(self._conns)

    def peer_status(self) -> dict[str, dict[str, Any]]:
        """Per known peer: role, url, connection state, queue, traffic, dialing and penalty."""
        now = asyncio.get_running_loop().time()
        out: dict[str, dict[str, Any]] = {}
        for peer_id in sorted((self.validators | self.observers | set(self._peer_urls)) - {self.node_id}):
            conn = self._conns.get(peer_id)
            dial = self._dial_states.get(peer_id)
            penalty = self._penalties.get(peer_id)
            url = self._peer_urls.get(peer_id)
            entry: dict[str, Any] = {
                "role": "validator" if peer_id in self.validators else "observer",
                "url": url,
                "connected": conn is not None,
                "direction": None if conn is None else ("outbound" if conn.outbound else "inbound"),
                "connected_for_s": None if conn is None else round(now - conn.connected_at, 3),
                "queue_frames": 0 if conn is None else conn.queued_frames,
                "queue_bytes": 0 if conn is None else conn.queued_bytes,
                "requests_pending": 0 if conn is None else len(conn.pending),  # ours, awaiting answers
                "requests_serving": 0 if conn is None else conn.serving_requests,  # theirs, being served
                "penalized_for_s": round(max(0.0, penalty.until - now), 3) if penalty else 0.0,
                "dial_attempts": dial.attempts if dial else 0,
                "next_dial_in_s": (round(max(0.0, dial.next_attempt_at - now), 3)
                                   if dial is not None and conn is None else None),
                "last_error": dial.last_error if dial else "",
            }
            if conn is not None:
                entry.update(conn.stats)
            out[peer_id] = entry
        return out

    # --- connections ----------------------------------------------------------------------------

    def _preferred(self, dialer: str, listener: str) -> bool:
        return dialer < listener

    def _register(self, conn: PeerConnection) -> bool:
        """Make `conn` the one connection to its peer, or refuse it (simultaneous-dial tie-break)."""
        if self._state != "running":
            return False  # a handshake that finished while stopping
        existing = self._conns.get(conn.peer_id)
        if existing is None and conn.peer_id not in self.validators and \
                sum(1 for p in self._conns if p not in self.validators) >= self.config.max_observer_links:
            self._counters.add("connections_refused_observer_limit")
            return False
        if existing is not None:
            if existing.preferred and not conn.preferred:
                self._counters.add("connections_refused_duplicate")
                return False
            self._counters.add("connections_replaced")
            existing.close(handshake.CLOSE_DUPLICATE, "replaced")
        self._conns[conn.peer_id] = conn
        self._counters.add("connections_opened")
        log.info("p2p %s connected to %s (%s)", self.node_id[:16], conn.peer_id[:16],
                 "outbound" if conn.outbound else "inbound")
        return True

    def _new_connection(self, ws: WebSocket, peer_id: str, outbound: bool,
                        tls_error: Callable[[], BaseException | None] | None = None) -> PeerConnection:
        dialer, listener = (self.node_id, peer_id) if outbound else (peer_id, self.node_id)
        return PeerConnection(ws, peer_id, outbound, self._preferred(dialer, listener), self.config,
                              self._counters, self._deliver, self._handlers, self._offender, tls_error)

    async def _run_connection(self, conn: PeerConnection) -> None:
        try:
            await conn.run()
        finally:
            if self._conns.get(conn.peer_id) is conn:
                del self._conns[conn.peer_id]
            self._counters.add("connections_closed")
            log.info("p2p %s disconnected from %s: %s", self.node_id[:16], conn.peer_id[:16],
                     conn.close_reason)

    def _deliver(self, peer_id: str, topic: str, payload: bytes) -> None:
        self._on_message(peer_id, topic, payload)

    def _offender(self, conn: PeerConnection, why: str) -> None:
        now = asyncio.get_running_loop().time()
        penalty = self._penalties.setdefault(conn.peer_id, _Penalty())
        penalty.level += 1
        duration = min(self.config.penalty_max_s, self.config.penalty_min_s * 2 ** (penalty.level - 1))
        penalty.until = now + duration
        self._counters.add("peers_disconnected_bad_frames")
        log.warning("p2p %s disconnects %s for %.0fs: %s", self.node_id[:16], conn.peer_id[:16],
                    duration, why)
        conn.close(handshake.CLOSE_BAD_FRAMES, "bad_frames")

    def _penalty_left(self, peer_id: str) -> float:
        penalty = self._penalties.get(peer_id)
        return 0.0 if penalty is None else max(0.0, penalty.until - asyncio.get_running_loop().time())

    def _admit(self, peer_id: str) -> HandshakeError | None:
        left = self._penalty_left(peer_id)
        if left > 0:
            return HandshakeError("penalized", f"refused for another {left:.0f}s after bad frames",
                                  handshake.CLOSE_PENALIZED)
        return None

    def _handshake_failed(self, exc: HandshakeError, who: str) -> None:
        self._counters.add("handshake_failed")
        self._counters.add(f"handshake_failed_{exc.code}")
        log.warning("p2p %s handshake with %s failed: %s", self.node_id[:16], who, exc)

    async def _handshake_timed_out(self, ws: WebSocket, who: str) -> None:
        self._handshake_failed(HandshakeError("timeout", "no complete handshake in time", 0), who)
        await close_websocket(ws, handshake.CLOSE_MALFORMED, "handshake_timeout", self.config.close_timeout_s)

    # --- inbound --------------------------------------------------------------------------------

    def _refuse(self, exc: HandshakeError, source: str, status: int) -> web.Response:
        """Answer an upgrade request we will not serve, cheaply: no WebSocket, no keep-alive."""
        self._counters.add("handshake_failed")
        self._counters.add(f"handshake_failed_{exc.code}")
        # Debug only: under a flood, one warning per refused attempt would be a flood of its own.
        log.debug("p2p %s refused a connection from %s: %s", self.node_id[:16], source, exc)
        response = web.Response(status=status, text=exc.message, headers={"Retry-After": "1"})
        response.force_close()
        return response

    def _evict(self, ticket: limits.Ticket) -> None:
        """A newer claim of the same node id took `ticket`'s slot: end that handshake now."""
        deadline = self._deadlines.get(ticket)
        if deadline is not None and not deadline.expired():  # an expired one cannot be rescheduled
            deadline.reschedule(asyncio.get_running_loop().time())

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        if self._state != "running":
            return web.Response(status=503, text="shutting down")
        self._forget_idle(request.protocol)
        source = request.remote or "unknown"
        claimed = request.headers.get(handshake.NODE_ID_HEADER)
        if claimed is not None and not self._ident.admits(claimed):
            return self._refuse(HandshakeError("not_allowed", "the claimed node id is not a validator or "
                                               "observer of this chain", 0), source, 403)
        loop = asyncio.get_running_loop()
        started = loop.time()
        # An unlisted observer's claim gets no slot of its own: it waits with the outsiders.
        decision = self._admission.admit(source, claimed if claimed in self._ident.allowed else None, started)
        if decision.ticket is None:
            status = 429 if decision.refusal == "rate_limited" else 503
            return self._refuse(HandshakeError(decision.refusal, _REFUSALS[decision.refusal], 0), source,
                                status)
        ticket = decision.ticket
        if decision.evicted is not None:
            self._evict(decision.evicted)
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        handler = request.protocol
        self._serving_handlers.add(handler)
        try:
            ws = web.WebSocketResponse(heartbeat=self.config.ping_interval_s, compress=False,
                                       max_msg_size=self.config.hard_max_frame_bytes,
                                       timeout=self.config.close_timeout_s)
            # The pre-auth deadline covers the upgrade and the hello; a hello in time earns the rest
            # of handshake_timeout_s for the remaining two frames.
            deadline = asyncio.timeout_at(started + self._preauth_timeout_s)

            def admit(peer_id: str) -> HandshakeError | None:
                if peer_id != claimed and claimed is not None:
                    return HandshakeError("wrong_claim", f"the upgrade request claimed node {claimed[:16]}…, "
                                          f"the hello {peer_id[:16]}…", handshake.CLOSE_NOT_ALLOWED)
                if not ticket.evicted and not deadline.expired():
                    ticket.said_hello = True
                    deadline.reschedule(started + self.config.handshake_timeout_s)
                return self._admit(peer_id)

            try:
                async with deadline:
                    self._deadlines[ticket] = deadline
                    await ws.prepare(request)
                    peer_id = await handshake.accept(ws, self._ident, admit, self._channel)
            except HandshakeError as exc:
                self._handshake_failed(exc, source)
                await close_websocket(ws, exc.close_code, exc.code, self.config.close_timeout_s)
                return ws
            except (ConnectionError, aiohttp.ClientError) as exc:
                self._handshake_failed(HandshakeError("closed", f"connection lost: {exc}", 0), source)
                return ws
            except TimeoutError:
                if ticket.evicted:
                    self._handshake_failed(HandshakeError("evicted", "a newer connection claimed the same "
                                                          "node id", 0), source)
                    await close_websocket(ws, handshake.CLOSE_DUPLICATE, "superseded",
                                          self.config.close_timeout_s)
                else:
                    await self._handshake_timed_out(ws, source)
                return ws if ws.prepared else web.Response(status=408, text="handshake timeout")
            finally:
                self._deadlines.pop(ticket, None)
                self._admission.release(ticket)
            self._counters.add("handshake_ok")
            conn = self._new_connection(ws, peer_id, outbound=False, tls_error=lambda: self._tls_errors.get(handler))
            if not self._register(conn):
                await close_websocket(ws, handshake.CLOSE_DUPLICATE, "duplicate", self.config.close_timeout_s)
                return ws
            await self._run_connection(conn)
            return ws
        finally:
            self._inbound.discard(task)
            self._serving_handlers.discard(handler)
            self._tls_errors.pop(handler, None)

    # --- outbound -------------------------------------------------------------------------------

    async def _dial_loop(self, peer_id: str) -> None:
        """Keep one connection to `peer_id`: dial when there is none, with jittered exponential backoff."""
        loop = asyncio.get_running_loop()
        state = self._dial_states[peer_id]
        backoff = Backoff(self.config.reconnect_backoff_min_s, self.config.reconnect_backoff_max_s, self._rng)
        first = True
        while self._state == "running":
            conn = self._conns.get(peer_id)
            if conn is not None:
                await conn.closed.wait()
                if loop.time() - conn.connected_at >= self.config.reconnect_backoff_max_s:
                    backoff.reset()  # it was a healthy link, not a flap
                continue
            if not first:
                delay = max(backoff.next_delay(), self._penalty_left(peer_id))
                state.next_attempt_at = loop.time() + delay
                await asyncio.sleep(delay)
            first = False
            if peer_id in self._conns or self._penalty_left(peer_id) > 0:
                continue
            state.attempts += 1
            conn = await self._dial_once(peer_id, state)
            if conn is not None:
                await self._run_connection(conn)

    async def _dial_once(self, peer_id: str, state: _DialState) -> PeerConnection | None:
        assert self._session is not None
        ws: aiohttp.ClientWebSocketResponse | None = None
        url = self._peer_urls[peer_id]
        secure = url.startswith("wss:")
        try:
            async with asyncio.timeout(self.config.handshake_timeout_s):
                ws = await self._session.ws_connect(
                    url, heartbeat=self.config.ping_interval_s, compress=0,
                    headers={handshake.NODE_ID_HEADER: self.node_id},
                    max_msg_size=self.config.hard_max_frame_bytes, ssl=self._client_tls if secure else False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.config.close_timeout_s))
                channel = ""
                if secure:
                    try:
                        channel = tls.peer_fingerprint(ws.get_extra_info("ssl_object"))
                    except ValueError as exc:
                        raise HandshakeError("malformed", f"no usable TLS session: {exc}",
                                             handshake.CLOSE_MALFORMED) from None
                await handshake.dial(ws, self._ident, peer_id, channel)
        except HandshakeError as exc:
            state.last_error = str(exc)
            self._handshake_failed(exc, peer_id[:16])
            if ws is not None:
                await close_websocket(ws, exc.close_code, exc.code, self.config.close_timeout_s)
            return None
        except TimeoutError:
            state.last_error = "timeout"
            if ws is None:
                self._counters.add("dial_failed")
            else:
                await self._handshake_timed_out(ws, peer_id[:16])
            return None
        except (OSError, aiohttp.ClientError) as exc:
            state.last_error = f"{type(exc).__name__}: {exc}"
            self._counters.add("dial_failed")
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                # A name that does not resolve yet (a container or pod not scheduled yet) is normal
                # at start-up: one line per streak, then retries with backoff, never a crash.
                self._counters.add("dial_failed_dns")
                if not state.unresolved:
                    log.warning("p2p %s cannot resolve the host of peer %s (%s); retrying with backoff",
                                self.node_id[:16], peer_id[:16], url)
                state.unresolved = True
            log.debug("p2p %s cannot dial %s: %s", self.node_id[:16], peer_id[:16], state.last_error)
            if ws is not None:
                await close_websocket(ws, handshake.CLOSE_GOING_AWAY, "error", self.config.close_timeout_s)
            return None
        except BaseException:
            if ws is not None:
                await close_websocket(ws, handshake.CLOSE_GOING_AWAY, "shutdown", self.config.close_timeout_s)
            raise
        self._counters.add("handshake_ok")
        state.last_error = ""
        if state.unresolved:
            state.unresolved = False
            log.info("p2p %s resolved the host of peer %s again", self.node_id[:16], peer_id[:16])
        failures: list[ssl.SSLError] = []
        if secure:
            tls.watch_client(ws, failures.append)
        conn = self._new_connection(ws, peer_id, outbound=True, tls_error=lambda: failures[0] if failures else None)
        if not self._register(conn):
            await close_websocket(ws, handshake.CLOSE_DUPLICATE, "duplicate", self.config.close_timeout_s)
            return None
        return conn


class TopicChannel:
    """One topic of a P2PNode seen as a plain byte transport: what a consensus runtime needs.

    `broadcast` reaches validators only, matching the engine's Broadcast ("every other validator").
    """

    def __init__(self, node: P2PNode, topic: str) -> None:
        if not frames.is_topic(topic):
            raise ValueError(f"bad topic {topic!r}: must match {frames.TOPIC_PATTERN}")
        self._node = node
        self.topic = topic

    def send(self, peer_id: str, data: bytes) -> bool:
        return self._node.send(peer_id, self.topic, data)

    def broadcast(self, data: bytes) -> int:
        return self._node.broadcast(self.topic, data, include_observers=False)
