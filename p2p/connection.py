"""One authenticated connection to one peer: its send queue, writer, reader and request handlers.

A `PeerConnection` is created after a successful handshake and lives until `run()` returns. It owns
three kinds of task (reader, writer, one per request it is serving) and cancels and awaits all of
them before `run()` returns. Everything the peer sends is untrusted: a frame that does not decode
is dropped and counted as a strike; past the configured number of strikes `on_offender` is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp

from p2p import frames
from p2p.config import P2PConfig
from p2p.errors import PeerUnavailable, RemoteError, RequestRefused
from p2p.handshake import CLOSE_GOING_AWAY, CLOSE_SEND_TIMEOUT

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[bytes]]
Deliver = Callable[[str, str, bytes], None]


class WebSocket(Protocol):
    """What both aiohttp's client and server WebSocket offer and a connection uses."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> aiohttp.WSMessage: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Counters:
    """A fixed set of named counters shared by a node and its connections."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.values: dict[str, int] = dict.fromkeys(names, 0)

    def add(self, name: str, amount: int = 1) -> None:
        if name not in self.values:
            raise KeyError(f"unknown p2p counter {name!r}")  # a typo in this package, not bad input
        self.values[name] += amount


async def close_websocket(ws: WebSocket, code: int, reason: str, timeout_s: float) -> None:
    """Close politely, but never wait longer than `timeout_s` for a peer that does not answer."""
    try:
        async with asyncio.timeout(timeout_s):
            await ws.close(code=code, message=reason.encode()[:120])
    except (TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError):
        pass


class PeerConnection:
    def __init__(
        self,
        ws: WebSocket,
        peer_id: str,
        outbound: bool,
        preferred: bool,
        config: P2PConfig,
        counters: Counters,
        deliver: Deliver,
        handlers: Mapping[str, Handler],
        on_offender: Callable[[PeerConnection, str], None],
        tls_error: Callable[[], BaseException | None] | None = None,
    ) -> None:
        self.ws = ws
        self.peer_id = peer_id
        self.outbound = outbound
        # The connection dialed by the lower node id wins a simultaneous dial, on both ends alike.
        self.preferred = preferred
        self._config = config
        self._counters = counters
        self._deliver = deliver
        self._handlers = handlers
        self._on_offender = on_offender
        # Why the TLS layer ended the connection, if it did (a record failed authentication).
        self._tls_error = tls_error or (lambda: None)
        self._queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self._wake = asyncio.Event()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.close_code = CLOSE_GOING_AWAY
        self.close_reason = "closed"
        self.closed = asyncio.Event()
        self.connected_at = asyncio.get_running_loop().time()
        self.bad_frames = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("frames_in", "frames_out", "bytes_in", "bytes_out", "dropped_queue_full", "bad_frames"), 0)

    @property
    def queued_frames(self) -> int:
        return len(self._queue)

    @property
    def serving_requests(self) -> int:
        return len(self._serving)

    def enqueue(self, frame: bytes) -> bool:
        """Queue a frame for the writer; False (and counted) when the queue is full or closing."""
        if self._closing:
            return False
        if (len(self._queue) >= self._config.send_queue_max
                or self.queued_bytes + len(frame) > self._config.send_queue_max_bytes):
            self._counters.add("queue_full")
            self.stats["dropped_queue_full"] += 1
            return False
        self._queue.append(frame)
        self.queued_bytes += len(frame)
        self._wake.set()
        return True

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to end; `run()` then cleans up and returns. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self.close_code, self.close_reason = code, reason
        for task in self._tasks:
            task.cancel()

    async def run(self) -> None:
        """Serve the connection until either side closes it or `close()` is called."""
        try:
            if not self._closing:
                self._tasks = [
                    asyncio.create_task(self._read_loop(), name=f"p2p-read-{self.peer_id[:8]}"),
                    asyncio.create_task(self._write_loop(), name=f"p2p-write-{self.peer_id[:8]}"),
                ]
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                await self._cleanup()
            finally:
                self.closed.set()

    async def _cleanup(self) -> None:
        self._closing = True
        tasks = [*self._tasks, *self._serving]
        for task in tasks:
            task.cancel()
        for task, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(result, Exception):
                log.error("p2p task %s for peer %s failed", task.get_name(), self.peer_id[:16],
                          exc_info=result)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable("disconnected", "connection closed before the answer"))
        self.pending.clear()
        self._queue.clear()
        self.queued_bytes = 0
        await close_websocket(self.ws, self.close_code, self.close_reason, self._config.close_timeout_s)

    # --- writing --------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            frame = self._queue.popleft()
            self.queued_bytes -= len(frame)
            try:
                async with asyncio.timeout(self._config.send_timeout_s):
                    await self.ws.send_bytes(frame)
            except TimeoutError:
                self._counters.add("send_timeout")
                self.close_code, self.close_reason = CLOSE_SEND_TIMEOUT, "send_timeout"
                log.warning("p2p peer %s did not take a frame within %.1fs; disconnecting",
                            self.peer_id[:16], self._config.send_timeout_s)
                return
            except (ConnectionError, aiohttp.ClientError):
                return
            self.stats["frames_out"] += 1
            self.stats["bytes_out"] += len(frame)
            self._counters.add("frames_out")
            self._counters.add("bytes_out", len(frame))

    # --- reading --------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                self._on_frame(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                self._strike("unexpected", "a text frame after the handshake")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                if isinstance(msg.data, aiohttp.WebSocketError) and msg.data.code == 1009:
                    # The reader refused to buffer it: the stream cannot be resynchronised.
                    self._counters.add("frames_dropped_oversize")
                    self.stats["bad_frames"] += 1
                    self._on_offender(self, "frame above hard_max_frame_bytes")
                elif not self._check_tls():
                    log.info("p2p peer %s: WebSocket error %s", self.peer_id[:16], msg.data)
                return
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                if msg.type is aiohttp.WSMsgType.CLOSE and not self._closing:
                    self.close_reason = f"peer closed ({msg.data}, {msg.extra or 'no reason'})"
                self._check_tls()
                return
            # PING/PONG are answered by aiohttp itself (autoping).

    def _check_tls(self) -> bool:
        """Count and log a link the TLS layer ended because a record failed authentication."""
        exc = self._tls_error()
        if exc is None:
            return False
        self._counters.add("links_dropped_tampered")
        self.close_reason = f"TLS record refused ({exc}): tampered with on the path?"
        log.warning("p2p link to %s dropped: a TLS record failed authentication (%s); someone on the "
                    "path may be changing, replaying or injecting data", self.peer_id[:16], exc)
        return True

    def _strike(self, reason: str, detail: str) -> None:
        self._counters.add(f"frames_dropped_{reason}")
        self.stats["bad_frames"] += 1
        self.bad_frames += 1
        log.debug("p2p dropped a frame from %s: %s", self.peer_id[:16], detail)
        if self.bad_frames > self._config.max_bad_frames_before_disconnect:
            self._on_offender(self, f"{self.bad_frames} bad frames, the last: {detail}")

    def _on_frame(self, data: bytes) -> None:
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(data)
        self._counters.add("frames_in")
        self._counters.add("bytes_in", len(data))
        try:
            header, payload = frames.decode_frame(data, self._config.max_frame_bytes)
        except frames.FrameError as exc:
            self._strike(exc.reason, str(exc))
            return
        if isinstance(header, frames.MessageHeader):
            self._counters.add("messages_in")
            try:
                self._deliver(self.peer_id, header.t, payload)
            except Exception:
                self._counters.add("deliver_errors")
                log.exception("p2p on_message failed for topic %r from %s", header.t, self.peer_id[:16])
        elif isinstance(header, frames.RequestHeader):
            self._on_request(header, payload)
        else:
            future = self.pending.pop(header.id, None)
            if future is None or future.done():
                # Normal after a request timed out; not the peer's fault.
                self._counters.add("responses_unmatched")
            elif isinstance(header, frames.ResponseHeader):
                future.set_result(payload)
            else:
                future.set_exception(RemoteError(header.code, header.message))

    # --- serving requests -----------------------------------------------------------------------

    def _on_request(self, header: frames.RequestHeader, payload: bytes) -> None:
        self._counters.add("requests_in")
        handler = self._handlers.get(header.t)
        if handler is None:
            self._counters.add("requests_no_handler")
            self.enqueue(frames.encode_error(header.id, "no_handler", f"no handler for topic {header.t!r}"))
        elif len(self._serving) >= self._config.max_concurrent_requests_per_peer:
            self._counters.add("requests_busy")
            self.enqueue(frames.encode_error(header.id, "busy", "too many concurrent requests; retry later"))
        else:
            task = asyncio.create_task(self._serve(handler, header, payload),
                                       name=f"p2p-serve-{header.t}-{self.peer_id[:8]}")
            self._serving.add(task)
            task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._serving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("p2p request task %s failed", task.get_name(), exc_info=task.exception())

    async def _serve(self, handler: Handler, header: frames.RequestHeader, payload: bytes) -> None:
        self.enqueue(await self._answer(handler, header, payload))

    async def _answer(self, handler: Handler, header: frames.RequestHeader, payload: bytes) -> bytes:
        try:
            async with asyncio.timeout(self._config.handler_timeout_s):
                answer = await handler(self.peer_id, payload)
        except RequestRefused as exc:
            code = exc.code if frames.is_error_code(exc.code) else "refused"
            return frames.encode_error(header.id, code, exc.message)
        except TimeoutError:
            self._counters.add("requests_handler_timeout")
            return frames.encode_error(header.id, "handler_timeout", "the handler took too long")
        except Exception:
            self._counters.add("requests_handler_error")
            log.exception("p2p handler for topic %r failed on a request from %s", header.t, self.peer_id[:16])
            return frames.encode_error(header.id, "handler_error", "the handler failed")
        if not isinstance(answer, bytes):
            self._counters.add("requests_handler_error")
            log.error("p2p handler for topic %r returned %s, not bytes", header.t, type(answer).__name__)
            return frames.encode_error(header.id, "handler_error", "the handler failed")
        frame = frames.encode_response(header.id, answer)
        if len(frame) > self._config.max_frame_bytes:
            self._counters.add("send_too_large")
            return frames.encode_error(header.id, "response_too_large",
                                       f"the answer of {len(answer)} bytes exceeds the frame limit")
        return frame
