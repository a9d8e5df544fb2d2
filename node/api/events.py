"""GET /v1/events: a WebSocket stream of committed blocks and their transaction results.

Each committed block is one JSON text message, in height order and without gaps, from `?from_height=H`
(or the next block to commit) onwards; a client that reconnects with `from_height` = last height + 1
misses nothing. The stream is one-way: messages the client sends are ignored.

Bounded on every side: at most `max_subscribers` streams at once (more get a JSON 503 before the
upgrade); the stream pulls the next block only after the previous message went out, so a slow reader
holds no backlog in this process; a reader that does not take one message within `send_timeout_s` is
cut off with close code 1008. What a client sends is budgeted too: pings are answered, but a client
sending more than `client_frames_per_s` frames per second on average (a burst of CLIENT_FRAME_BURST
allowed) is closed with 1008 "too many client frames". A client that vanishes ends its stream quietly.
Node shutdown closes every stream with 1001.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from node.api.errors import ApiError, dumps
from node.service import NodeService

CLOSE_NORMAL = int(WSCloseCode.OK)  # the node has no more blocks to send (it is stopping)
CLOSE_GOING_AWAY = int(WSCloseCode.GOING_AWAY)  # the node's HTTP server is shutting down
CLOSE_SLOW_CONSUMER = int(WSCloseCode.POLICY_VIOLATION)
CLOSE_INTERNAL_ERROR = int(WSCloseCode.INTERNAL_ERROR)
MAX_CLIENT_MESSAGE_BYTES = 4096  # the stream is one-way; anything a client sends is small or abuse
CLOSE_TIMEOUT_S = 2.0
CLIENT_FRAME_BURST = 20  # frames a client may send at once before its average rate counts
HEIGHT_RE = re.compile(r"[0-9]{1,19}")


class EventStream:
    """The /v1/events endpoint of one API application: its subscriber set and its limits."""

    def __init__(self, service: NodeService, *, max_subscribers: int, send_timeout_s: float,
                 heartbeat_s: float, logger: logging.Logger, client_frames_per_s: float = 5.0) -> None:
        self.service = service
        self.max_subscribers = max_subscribers
        self.send_timeout_s = send_timeout_s
        self.heartbeat_s = heartbeat_s
        self.client_frames_per_s = client_frames_per_s
        self.logger = logger
        # Each open stream with its TCP transport, to abort a peer that does not even take a close frame.
        self.subscribers: dict[web.WebSocketResponse, asyncio.BaseTransport | None] = {}
        self._closing = False

    def _from_height(self, request: web.Request) -> int | None:
        unknown = sorted(set(request.query) - {"from_height"})
        if unknown:
            raise ApiError("invalid_query", f"unknown query parameter(s) {', '.join(unknown)}; "
                                            "this route takes: from_height")
        raw = request.query.get("from_height")
        if raw is None:
            return None
        if not HEIGHT_RE.fullmatch(raw) or int(raw) > 2**63 - 1:
            raise ApiError("invalid_query", f"from_height must be a non-negative integer, got {raw[:40]!r}")
        return int(raw)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        from_height = self._from_height(request)
        # Pings are answered here rather than by aiohttp (autoping), so that they count against the
        # client's frame budget and a failed pong is a closed client, not an exception.
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, max_msg_size=MAX_CLIENT_MESSAGE_BYTES,
                                   autoping=False)
        if not ws.can_prepare(request).ok:
            raise ApiError("upgrade_required",
                           "GET /v1/events is a WebSocket; connect with a WebSocket client",
                           headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        if self._closing:
            raise ApiError("shutting_down", "the node is shutting down")
        if len(self.subscribers) >= self.max_subscribers:
            raise ApiError("too_many_subscribers",
                           f"this node already serves {self.max_subscribers} event streams; retry later",
                           retry_after_s=5)
        await ws.prepare(request)
        self.subscribers[ws] = request.transport
        try:
            await self._serve(ws, from_height)
        finally:
            self.subscribers.pop(ws, None)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, from_height: int | None) -> None:
        # Two owned tasks: one pumps blocks out, one reads the client's side so its close frames and
        # pongs are processed. Whichever ends first ends the other; neither outlives this handler.
        pump = asyncio.create_task(self._pump(ws, from_height))
        reader = asyncio.create_task(self._drain_client(ws))
        try:
            await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, reader):
                task.cancel()
            results = await asyncio.gather(pump, reader, return_exceptions=True)
        for result in results:
            if isinstance(result, ConnectionError):
                continue  # the client went away; nothing is wrong with the node
            if isinstance(result, Exception):
                self.logger.error("event stream failed", exc_info=result)
                await self._close(ws, CLOSE_INTERNAL_ERROR, "internal error")
        if not ws.closed:
            await self._close(ws, CLOSE_NORMAL, "stream ended")

    async def _pump(self, ws: web.WebSocketResponse, from_height: int | None) -> None:
        events = self.service.events(from_height)
        try:
            async for event in events:
                if ws.closed:
                    return
                if not await self._send(ws, event):
                    return
                if event.get("type") == "error":
                    # The node ends a stream with an error event, e.g. when the subscriber fell more
                    # blocks behind than the node buffers for it; the client resumes with from_height.
                    code = str(event.get("code", "error"))
                    slow = code == "subscriber_too_slow"
                    await self._close(ws, CLOSE_SLOW_CONSUMER if slow else CLOSE_INTERNAL_ERROR, code)
                    return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        await self._close(ws, CLOSE_NORMAL, "the node stopped")

    async def _send(self, ws: web.WebSocketResponse, event: dict[str, Any]) -> bool:
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await ws.send_str(dumps(event))
        except TimeoutError:
            self.logger.warning("event subscriber too slow; closing its stream",
                                extra={"fields": {"timeout_s": self.send_timeout_s}})
            await self._close(ws, CLOSE_SLOW_CONSUMER, "slow consumer")
            return False
        except ConnectionError:
            return False
        return True

    async def _drain_client(self, ws: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        allowance = float(CLIENT_FRAME_BURST)  # a token bucket: one token per frame received
        last = loop.time()
        while True:
            try:
                msg = await ws.receive()
            except ConnectionError:
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            now = loop.time()
            allowance = min(float(CLIENT_FRAME_BURST), allowance + (now - last) * self.client_frames_per_s)
            last = now
            if allowance < 1.0:
                self.logger.info("event subscriber sent too many frames; closing its stream",
                                 extra={"fields": {"frames_per_s": self.client_frames_per_s}})
                await self._close(ws, CLOSE_SLOW_CONSUMER, "too many client frames")
                return
            allowance -= 1.0
            if msg.type == WSMsgType.PING:
                try:
                    async with asyncio.timeout(self.send_timeout_s):
                        await ws.pong(msg.data)
                except (TimeoutError, ConnectionError):
                    return

    async def _close(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        if ws.closed:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError):
            # The peer is not reading even the close frame; drop the connection instead.
            transport = self.subscribers.get(ws)
            if isinstance(transport, asyncio.Transport):
                transport.abort()

    async def close_all(self, app: web.Application) -> None:
        """on_shutdown hook: refuse new streams and close the open ones with 1001 (going away)."""
        self._closing = True
        await asyncio.gather(*(self._close(ws, CLOSE_GOING_AWAY, "node shutting down")
                               for ws in list(self.subscribers)), return_exceptions=True)
