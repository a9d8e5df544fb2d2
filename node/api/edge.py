"""The REST API's TCP edge: connection limits, deadlines for slow clients, JSON answers to malformed HTTP.

What reaches the aiohttp application is a well-formed request from a client that is within its limits.
Before that, on every connection:

- a source address may hold at most `max_connections_per_ip` connections, and the server at most
  `max_connections`; one more is answered 429 too_many_connections (JSON, Retry-After) and closed;
- a request head (request line and headers) must be complete within `header_timeout_s` of its first
  byte, otherwise the connection is answered 408 request_timeout and closed (slowloris);
- a connection with no request under way is closed after `idle_timeout_s` (aiohttp's keep-alive timer,
  which also runs from the moment the connection opens);
- after an answer to a request whose body was not read (a refusal), what of the body still arrives is
  discarded for at most `linger_timeout_s` (so the client can read the answer), then the connection
  is closed;
- a request aiohttp's parser refuses (bad or duplicate Content-Length, Content-Length together with
  Transfer-Encoding, over-long lines, too many headers, bad chunk sizes) is answered 400 bad_request
  as the contract's JSON error and logged as one line, never a traceback.

aiohttp answers parser errors itself, as text/plain, from `RequestHandler.handle_error`, and its
`Server` always builds a plain `RequestHandler`; neither takes a hook. So this module subclasses
`web.RequestHandler` and installs it through its own `web.BaseSite`, whose protocol factory builds the
subclass around the runner's server. Only documented names of `RequestHandler` are overridden or
called (`connection_made`, `connection_lost`, `data_received`, `handle_error`, `force_close`).

This module owns no application logic; `node.api.app` owns the routes and the error middleware.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from node.api.errors import INTERNAL_ERROR_MESSAGE, RETRYABLE_CODES, dumps, error_body, error_response, status_for
from node.metrics import NodeMetrics

REASONS: Mapping[int, str] = MappingProxyType({408: "Request Timeout", 429: "Too Many Requests"})
CONNECTION_RETRY_AFTER_S = 1
MAX_DETAIL_CHARS = 200  # parser messages quote the client's bytes; keep answers and log lines short


@dataclass(frozen=True)
class EdgeLimits:
    idle_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    linger_timeout_s: float = 2.0
    max_headers: int = 64
    max_line_bytes: int = 8190


class ConnectionGate:
    """Open connections per source address, for one server (never shared between nodes)."""

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.by_source: Counter[str] = Counter()
        self.total = 0

    def admit(self, source: str) -> bool:
        if self.total >= self.max_total or self.by_source[source] >= self.max_per_source:
            return False
        self.by_source[source] += 1
        self.total += 1
        return True

    def release(self, source: str) -> None:
        self.by_source[source] -= 1
        if self.by_source[source] <= 0:
            del self.by_source[source]
        self.total -= 1


@dataclass
class Edge:
    """What every connection of one API server shares: its limits, gate, metrics and logger."""

    limits: EdgeLimits
    gate: ConnectionGate
    metrics: NodeMetrics
    logger: logging.Logger


def _source(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


def raw_error(code: str, message: str, *, retry_after_s: int | None = None) -> bytes:
    """A complete HTTP/1.1 JSON error answer that closes the connection, for moments when no request
    object exists to answer through (a refused connection, a request head that never completed)."""
    status = status_for(code)
    body = dumps(error_body(code, message)).encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
             "Content-Type: application/json; charset=utf-8",
             f"Content-Length: {len(body)}",
             "Connection: close"]
    if code in RETRYABLE_CODES:
        lines.append(f"Retry-After: {max(1, retry_after_s or 1)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def describe_parse_error(exc: BaseException | None, fallback: str | None) -> str:
    if isinstance(exc, LineTooLong):
        return f"a request line or header line is longer than {exc.args[1]} bytes"
    if isinstance(exc, HttpProcessingError) and exc.message:
        detail = str(exc.message)
    else:
        detail = fallback or (str(exc) if exc is not None else "") or "unparseable request"
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[:MAX_DETAIL_CHARS] + "..."


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 protocol, plus the per-connection limits and deadlines above."""

    def __init__(self, manager: web.Server, *, edge: Edge, loop: asyncio.AbstractEventLoop,
                 **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=edge.limits.idle_timeout_s,
                         max_line_size=edge.limits.max_line_bytes, max_field_size=edge.limits.max_line_bytes,
                         max_headers=edge.limits.max_headers, lingering_time=edge.limits.linger_timeout_s,
                         logger=edge.logger, **kwargs)
        self.edge = edge
        self.source: str | None = None  # set once admitted: the gate slot this connection holds
        self.between_requests = True  # no request is being handled: bytes now start a request head
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        source = _source(transport)
        if not self.edge.gate.admit(source):
            self.edge.metrics.dropped.labels("http_too_many_connections").inc()
            self.edge.logger.warning("refused a REST connection: too many open",
                                     extra={"fields": {"peer": source}})
            self._refuse("too_many_connections",
                         f"this node already holds the most connections it takes from {source} or in total; "
                         "reuse a connection or retry later", retry_after_s=CONNECTION_RETRY_AFTER_S)
            return
        self.source = source

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        if self.source is not None:
            self.edge.gate.release(self.source)
            self.source = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if data and self.between_requests and self.head_deadline is None and self.transport is not None:
            self.head_deadline = asyncio.get_running_loop().call_later(self.edge.limits.header_timeout_s,
                                                                       self._head_timed_out)

    def request_started(self) -> None:
        """Called by the application for each request it handles: the head is complete."""
        self.between_requests = False
        self._cancel_head_deadline()

    def request_finished(self) -> None:
        self.between_requests = True

    def _cancel_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        # A head that completed in the same loop turn is about to reach the application; let it.
        if not self.between_requests or self.transport is None:
            return
        limit = self.edge.limits.header_timeout_s
        self.edge.metrics.dropped.labels("http_header_timeout").inc()
        self.edge.logger.info("closed a REST connection: request head incomplete after %gs", limit,
                              extra={"fields": {"peer": self.source}})
        self._refuse("request_timeout", f"the request head did not arrive within {limit:g}s")

    def _refuse(self, code: str, message: str, *, retry_after_s: int | None = None) -> None:
        if self.transport is not None:
            self.transport.write(raw_error(code, message, retry_after_s=retry_after_s))
        self.force_close()  # closes the transport after what was written is flushed

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        self._cancel_head_deadline()
        if request.writer.output_size > 0:
            # Part of a response is already on the wire; no second answer can follow it.
            raise ConnectionError("a response was already under way when the request failed")
        if status >= 500:
            self.edge.logger.error("internal error answering a request from %s", request.remote, exc_info=exc)
            response = error_response("internal_error", INTERNAL_ERROR_MESSAGE)
        else:
            detail = describe_parse_error(exc, message)
            self.edge.logger.info("refused a malformed HTTP request: %s", detail,
                                  extra={"fields": {"peer": request.remote}})
            response = error_response("bad_request", f"the HTTP request is malformed: {detail}")
        self.edge.metrics.observe_request("-", "malformed", response.status, 0.0)
        response.force_close()
        return response


class EdgeSite(web.BaseSite):
    """A TCP listener whose connections are `EdgeRequestHandler`s of the runner's server."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, edge: Edge,
                 ssl_context: ssl.SSLContext | None = None, **handler_kwargs: Any) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.host = host
        self.port = port
        self.edge = edge
        self.handler_kwargs = handler_kwargs

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl_context else 'http'}://{host}:{self.port}"

    def _make_protocol(self) -> EdgeRequestHandler:
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner was cleaned up while its site still accepts connections")
        return EdgeRequestHandler(server, edge=self.edge, loop=asyncio.get_running_loop(), **self.handler_kwargs)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # A TLS handshake has the request head's deadline: a client that stalls in it holds a slot.
        self._server = await loop.create_server(
            self._make_protocol, self.host, self.port, backlog=self._backlog, reuse_address=True,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.edge.limits.header_timeout_s if self._ssl_context else None)
