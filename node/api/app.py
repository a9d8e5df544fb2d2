"""The REST API: an aiohttp application over a `NodeService`, and the server that runs it.

Handlers only parse, validate and translate: they ask the service (which enqueues work for the node
or reads committed data) and turn its answer into JSON. Every error, including unknown routes, wrong
methods and bugs, leaves as the JSON error body of `node.api.errors`; nothing answers HTML or a traceback.

Limits (body size, batch size, commit wait, WebSocket subscribers) come in as an `ApiLimits`, built
from the node's configuration by the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from ledger.errors import Rejected
from ledger.tx import Transaction, decode_canonical_array, decode_canonical_tx
from node.api.edge import ConnectionGate, Edge, EdgeLimits, EdgeRequestHandler, EdgeSite
from node.api.errors import INTERNAL_ERROR_MESSAGE, ApiError, dumps, error_response, from_api_error, status_for
from node.api.events import EventStream
from node.api.explorer import explorer_routes, index_routes
from node.api.governance import governance_routes
from node.api.limits import ApiLimits
from node.api.openapi import build_openapi
from node.api.query import checked_query
from node.config import NodeConfig
from node.metrics import NodeMetrics
from node.service import NodeService, SubmitOutcome

MAX_HEIGHT = 2**63 - 1  # storage keys hold heights in 8 bytes
HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
HEIGHT_RE = re.compile(r"[0-9]{1,19}")
MAX_RECORD_KEY_BYTES = 128
JSON_MAX_DEPTH_HINT = "the JSON is nested too deeply"
# Not an HTTP status anyone receives: the metric label of a request whose client hung up before the
# answer (nginx's "client closed request"), so that it is neither a 4xx refusal nor a 500.
CLIENT_CLOSED_STATUS = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def limits_from_config(config: NodeConfig) -> ApiLimits:
    return ApiLimits(
        max_body_bytes=config.max_body_bytes, max_batch_txs=config.max_batch_txs,
        commit_wait_timeout_s=config.wait_commit_timeout_s, max_ws_subscribers=config.max_ws_subscribers,
        ws_send_timeout_s=config.ws_send_timeout_s, ws_heartbeat_s=config.ws_heartbeat_s,
        shutdown_timeout_s=config.shutdown_timeout_s, ws_client_frames_per_s=config.ws_client_frames_per_s,
        body_timeout_s=config.http_body_timeout_s, idle_timeout_s=config.http_idle_timeout_s,
        header_timeout_s=config.http_header_timeout_s, linger_timeout_s=config.http_linger_timeout_s,
        max_connections=config.http_max_connections,
        max_connections_per_ip=config.http_max_connections_per_ip, max_headers=config.http_max_headers,
        max_line_bytes=config.http_max_line_bytes, explorer=config.explorer_enabled,
    )


SERVICE_KEY = web.AppKey("service", NodeService)
METRICS_KEY = web.AppKey("metrics", NodeMetrics)
LIMITS_KEY = web.AppKey("limits", ApiLimits)
EVENTS_KEY = web.AppKey("events", EventStream)
LOGGER_KEY = web.AppKey("logger", logging.Logger)


class ClientGone(Exception):
    """The client closed its connection before the request was read; there is no one to answer."""


# --- request parsing --------------------------------------------------------------------------------


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without holding more than that,
    and (408) a body that has not fully arrived within `timeout_s`."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ApiError("body_too_large", f"the request body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise ApiError("body_too_large", f"the request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError("request_timeout", f"the request body did not arrive within {timeout_s:g}s") from None
    except ConnectionError as exc:
        raise ClientGone(str(exc)) from None
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A broken chunked encoding, or a body shorter than its Content-Length followed by EOF.
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) and exc.__cause__ else exc
        detail = getattr(cause, "message", None) or str(cause) or "unreadable body"
        raise ApiError("bad_request", f"the request body is malformed: {str(detail)[:200]}") from None
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            # Two values for one key would let a client and the node disagree on what was signed.
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no duplicate keys; ApiError("invalid_json") otherwise."""
    if not raw.strip():
        raise ApiError("invalid_json", "the request body is empty; send a transaction as JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError("invalid_json", f"the request body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ApiError("invalid_json", f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                       f"column {exc.colno}") from exc
    except RecursionError as exc:
        raise ApiError("invalid_json", JSON_MAX_DEPTH_HINT) from exc
    except ValueError as exc:  # duplicate keys, NaN, integers longer than Python's digit limit
        raise ApiError("invalid_json", f"the request body is not acceptable JSON: {exc}") from exc


def _hex64(value: str, code: str, what: str) -> str:
    if not HEX64_RE.fullmatch(value):
        raise ApiError(code, f"{what} must be 64 hex characters, got {_preview(value)}")
    return value.lower()


def _preview(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _height(value: str) -> int:
    if not HEIGHT_RE.fullmatch(value) or int(value) > MAX_HEIGHT:
        raise ApiError("invalid_height",
                       f"height must be a non-negative integer or 'latest', got {_preview(value)}")
    return int(value)


def _outcome_json(outcome: SubmitOutcome) -> dict[str, Any]:
    if outcome.accepted:
        return {"hash": outcome.hash, "status": "pending"}
    return {"hash": outcome.hash, "status": "rejected",
            "error": {"code": outcome.code, "message": outcome.message or outcome.code.replace("_", " ")}}


def _refusal(outcome: SubmitOutcome) -> ApiError:
    extra = {"hash": outcome.hash} if outcome.hash else {}
    return ApiError(outcome.code, outcome.message or outcome.code.replace("_", " "),
                    retry_after_s=outcome.retry_after_s, extra=extra)


# --- handlers ---------------------------------------------------------------------------------------


class _Handlers:
    def __init__(self, service: NodeService, limits: ApiLimits, openapi: dict[str, Any]) -> None:
        self.service = service
        self.limits = limits
        self.openapi_text = dumps(openapi)

    def _json(self, value: Any, status: int = 200) -> web.Response:
        return web.json_response(value, status=status, dumps=dumps)

    async def post_transactions(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ("wait", "timeout_s"))
        wait = request.query.get("wait")
        if wait is not None and wait != "commit":
            raise ApiError("invalid_query", f"wait must be 'commit', got {_preview(wait)}")
        timeout_s = self._wait_timeout(request.query.get("timeout_s"), wait is not None)
        raw = await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout_s)
        # Canonical bytes (what a signing client usually sends) skip the JSON parser; anything else,
        # including every malformed body, takes the strict path with its precise errors.
        fast = decode_canonical_array(raw) if raw[:1] == b"[" and not wait else None
        if fast is not None:
            return await self._submit_batch(fast)
        single = decode_canonical_tx(raw) if raw[:1] == b"{" else None
        if single is not None:
            return await self._submit_one(single, timeout_s if wait else None)
        body = parse_json(raw)
        if isinstance(body, dict):
            return await self._submit_one(body, timeout_s if wait else None)
        if isinstance(body, list):
            if wait:
                raise ApiError("invalid_query", "wait=commit takes a single transaction, not an array")
            return await self._submit_batch(body)
        raise ApiError("malformed", "the body must be a transaction object or a JSON array of transactions")

    def _wait_timeout(self, raw: str | None, waiting: bool) -> float:
        ceiling = self.limits.commit_wait_timeout_s
        if raw is None:
            return ceiling
        if not waiting:
            raise ApiError("invalid_query", "timeout_s only applies together with wait=commit")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not 0 < value <= ceiling:
            raise ApiError("invalid_query", f"timeout_s must be a number of seconds in (0, {ceiling:g}]")
        return value

    async def _submit_one(self, tx: dict[str, Any] | Transaction, timeout_s: float | None) -> web.StreamResponse:
        outcomes = await self.service.submit([tx])
        if len(outcomes) != 1:
            raise RuntimeError(f"service.submit answered {len(outcomes)} outcomes for 1 transaction")
        outcome = outcomes[0]
        # With wait=commit a resubmission of the same transaction (a client retrying after a lost
        # answer) waits for, or reports, the one already known instead of failing with 409.
        retry_of_known = timeout_s is not None and outcome.code == "duplicate" and outcome.hash is not None
        if not outcome.accepted and not retry_of_known:
            raise _refusal(outcome)
        if outcome.hash is None:
            raise RuntimeError("service.submit accepted a transaction without a hash")
        if timeout_s is None:
            return self._json(_outcome_json(outcome), status=202)
        status = await self.service.wait_committed(outcome.hash, timeout_s)
        if status is None:
            # Why it did not commit is the chain's state, not this transaction's: the node's view of
            # consensus goes with the answer so that a client can say so (e.g. quorum lost).
            view = self.service.status()
            health = view.get("consensus_health")
            raise ApiError("commit_timeout",
                           f"accepted, not committed within {timeout_s:g}s (consensus: {health or 'unknown'}); "
                           f"poll GET /v1/transactions/{outcome.hash} for its outcome",
                           extra={"hash": outcome.hash, "waited_s": timeout_s, "consensus_health": health,
                                  "liveness": view.get("liveness")})
        return self._json(status.to_json(), status=200)

    async def _submit_batch(self, txs: list[Any]) -> web.StreamResponse:
        if not txs:
            raise ApiError("empty_batch", "the array holds no transactions")
        if len(txs) > self.limits.max_batch_txs:
            raise ApiError("batch_too_large", f"the array holds {len(txs)} transactions; the limit is "
                                              f"{self.limits.max_batch_txs} per request")
        outcomes = await self.service.submit(txs)
        if len(outcomes) != len(txs):
            raise RuntimeError(f"service.submit answered {len(outcomes)} outcomes for {len(txs)} txs")
        results = [_outcome_json(o) for o in outcomes]
        if any(o.accepted for o in outcomes):
            return self._json(results, status=202)
        first = outcomes[0]
        raise ApiError(first.code,
                       f"none of the {len(txs)} transactions was accepted; the first was refused: "
                       f"{first.message or first.code}",
                       retry_after_s=first.retry_after_s, extra={"results": results})

    async def get_transaction(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        tx_hash = _hex64(request.match_info["hash"], "invalid_hash", "the transaction hash")
        status = self.service.tx_status(tx_hash)
        if status is None:
            raise ApiError("tx_not_found", f"no pending or committed transaction has hash {tx_hash}")
        return self._json(status.to_json())

    async def get_transaction_proof(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        tx_hash = _hex64(request.match_info["hash"], "invalid_hash", "the transaction hash")
        bundle = self.service.proof(tx_hash)
        if bundle is None:
            raise ApiError("tx_not_found", f"no committed transaction has hash {tx_hash}; a pending one has no "
                                           "proof until it commits")
        return self._json(bundle)

    async def get_block_proof(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        height = _height(request.match_info["height"])
        bundle = self.service.header_proof(height)
        if bundle is None:
            raise ApiError("block_not_found", f"no block at height {height}")
        return self._json(bundle)

    async def get_latest_block(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        block = self.service.block(None)
        if block is None:
            raise ApiError("block_not_found", "no block has been committed yet")
        return self._json(block)

    async def get_block(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        height = _height(request.match_info["height"])
        block = self.service.block(height)
        if block is None:
            raise ApiError("block_not_found", f"no block at height {height}")
        return self._json(block)

    async def get_account(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        address = _hex64(request.match_info["address"], "invalid_address", "the account address")
        return self._json(self.service.account(address))

    async def get_record(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        owner = _hex64(request.match_info["owner"], "invalid_address", "the record owner")
        key = request.match_info["key"]
        if not 1 <= len(key.encode("utf-8", "surrogatepass")) <= MAX_RECORD_KEY_BYTES:
            raise ApiError("invalid_record_key",
                           f"a record key is 1 to {MAX_RECORD_KEY_BYTES} bytes of UTF-8")
        record = self.service.record(owner, key)
        if record is None:
            raise ApiError("record_not_found", f"account {owner} has no record under key {_preview(key)}")
        return self._json(record)

    async def get_status(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        return self._json(self.service.status())

    async def get_healthz(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        service = self.service
        return self._json({"status": "ok", "node_id": service.node_id, "chain_id": service.chain_id})

    async def get_openapi(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        return web.Response(text=self.openapi_text, content_type="application/json")


async def _get_metrics(request: web.Request) -> web.StreamResponse:
    checked_query(request, ())
    body = request.app[METRICS_KEY].render()
    # CONTENT_TYPE_LATEST carries its own charset parameter, which aiohttp wants passed separately.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- middleware -------------------------------------------------------------------------------------


def _snake(reason: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "bad_request"


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    # Unmatched paths share one label so a scan of random URLs cannot blow up the metric's cardinality.
    return resource.canonical if resource is not None else "unmatched"


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    if exc.status == 404:
        return error_response("not_found", f"no route {request.method} {_preview(request.path)}; "
                                           "see GET /openapi.json for the API")
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return error_response("method_not_allowed", f"{request.method} is not allowed on this route; "
                                                    f"allowed: {allowed}", headers={"Allow": allowed})
    if exc.status == 413:
        return error_response("body_too_large", "the request body is too large")
    reason = exc.text or exc.reason
    if reason.startswith(f"{exc.status}: "):
        reason = reason[len(f"{exc.status}: "):]
    if 400 <= exc.status < 500:
        code = "bad_request" if exc.status == status_for("bad_request") else _snake(exc.reason)
        return web.json_response({"error": {"code": code, "message": reason}}, status=exc.status, dumps=dumps)
    return error_response("internal_error", INTERNAL_ERROR_MESSAGE)


def make_error_middleware(metrics: NodeMetrics, logger: logging.Logger) -> Callable[..., Any]:
    @web.middleware
    async def errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        protocol = request.protocol
        edge = protocol if isinstance(protocol, EdgeRequestHandler) else None
        if edge is not None:
            edge.request_started()
        try:
            return await _answer(request, handler, started)
        finally:
            if edge is not None:
                edge.request_finished()

    async def _answer(request: web.Request, handler: Handler, started: float) -> web.StreamResponse:
        observed: int | None = None
        try:
            response = await handler(request)
        except ApiError as exc:
            response = from_api_error(exc)
            if exc.code in ("body_too_large", "request_timeout", "bad_request"):
                # The rest of the body is discarded, not parsed; do not reuse the connection.
                response.force_close()
        except ClientGone as exc:
            logger.info("client closed the connection before its request was read",
                        extra={"fields": {"peer": request.remote, "method": request.method,
                                          "path": _preview(request.path), "reason": str(exc)}})
            # Nobody will read this answer; aiohttp drops it quietly on the closed transport.
            response = error_response("bad_request", "the connection was closed by the client")
            response.force_close()
            observed = CLIENT_CLOSED_STATUS
        except Rejected as exc:
            response = error_response(exc.code, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _from_http_exception(exc, request)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("internal error answering %s %s", request.method, request.path)
            response = error_response("internal_error", INTERNAL_ERROR_MESSAGE)
        if not isinstance(response, web.WebSocketResponse):
            metrics.observe_request(request.method, _route_label(request), observed or response.status,
                                    time.perf_counter() - started)
        return response

    return errors_and_metrics


def make_expect_handler(limits: ApiLimits, metrics: NodeMetrics) -> Callable[[web.Request], Awaitable[Any]]:
    """`Expect: 100-continue`: refuse a declared oversized body at once (413, no 100 Continue sent, so a
    well-behaved client never sends it); answer any other expectation 417. Runs before the middleware."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        protocol = request.protocol
        if isinstance(protocol, EdgeRequestHandler):
            protocol.request_started()  # the head is complete (the middleware has not run yet)
        response: web.Response | None = None
        expectation = request.headers.get("Expect", "")
        declared = request.content_length
        if expectation.lower() != "100-continue":
            response = error_response("expectation_failed",
                                      f"the only expectation this node meets is 100-continue, not "
                                      f"{_preview(expectation)}")
        elif declared is not None and declared > limits.max_body_bytes:
            response = error_response("body_too_large", f"the request body is {declared} bytes; the limit is "
                                                        f"{limits.max_body_bytes} bytes")
        if response is not None:
            response.force_close()
            metrics.observe_request(request.method, _route_label(request), response.status, 0.0)
            return response
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            # The interim answer is not part of the response the handler will write.
            request.writer.output_size = 0
        return None

    return expect


# --- application ------------------------------------------------------------------------------------


def make_app(service: NodeService, metrics: NodeMetrics, limits: ApiLimits | None = None,
             logger: logging.Logger | None = None) -> web.Application:
    """The aiohttp application serving the REST API, the event stream, /healthz, /metrics, /openapi.json."""
    limits = limits or ApiLimits()
    logger = logger or logging.getLogger("ledgerd.api")
    # aiohttp's own cap is a second line of defence; handlers read bodies through read_body's cap.
    app = web.Application(middlewares=[make_error_middleware(metrics, logger)],
                          client_max_size=limits.max_body_bytes)
    events = EventStream(service, max_subscribers=limits.max_ws_subscribers,
                         send_timeout_s=limits.ws_send_timeout_s, heartbeat_s=limits.ws_heartbeat_s,
                         client_frames_per_s=limits.ws_client_frames_per_s, logger=logger)
    app[SERVICE_KEY] = service
    app[METRICS_KEY] = metrics
    app[LIMITS_KEY] = limits
    app[EVENTS_KEY] = events
    app[LOGGER_KEY] = logger
    handlers = _Handlers(service, limits, build_openapi(limits))
    expect = make_expect_handler(limits, metrics)
    app.router.add_post("/v1/transactions", handlers.post_transactions, name="submit_transactions",
                        expect_handler=expect)
    gets: list[tuple[str, Handler, str]] = [
        ("/v1/transactions/{hash}", handlers.get_transaction, "get_transaction"),
        ("/v1/transactions/{hash}/proof", handlers.get_transaction_proof, "get_transaction_proof"),
        ("/v1/blocks/latest", handlers.get_latest_block, "get_latest_block"),
        ("/v1/blocks/{height}/proof", handlers.get_block_proof, "get_block_proof"),
        ("/v1/blocks/{height}", handlers.get_block, "get_block"),
        ("/v1/accounts/{address}", handlers.get_account, "get_account"),
        ("/v1/records/{owner}/{key:.+}", handlers.get_record, "get_record"),
        ("/v1/status", handlers.get_status, "get_status"),
        ("/v1/events", events.handle, "events"),
        ("/healthz", handlers.get_healthz, "healthz"),
        ("/metrics", _get_metrics, "metrics"),
        ("/openapi.json", handlers.get_openapi, "openapi"),
        *governance_routes(service),
        *index_routes(service),
        *(explorer_routes() if limits.explorer else ()),
    ]
    for path, handler, name in gets:
        app.router.add_get(path, handler, name=name, expect_handler=expect)
    app.on_shutdown.append(events.close_all)
    return app


class ApiServer:
    """Runs an API application on a TCP port; `stop()` is the graceful shutdown.

    Connections go through `node.api.edge` (connection caps, header and idle deadlines, JSON answers
    to malformed HTTP) with the limits the application was made with. Stopping closes the listening
    socket first, then every event stream (close code 1001), then waits up to `shutdown_timeout_s` for
    in-flight requests.
    """

    def __init__(self, app: web.Application, host: str, port: int, shutdown_timeout_s: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._ssl_context = ssl_context  # None: plain HTTP (e.g. behind a TLS-terminating proxy)
        self.host = host
        self.requested_port = port
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=shutdown_timeout_s)
        limits = app[LIMITS_KEY]
        self.edge = Edge(
            limits=EdgeLimits(idle_timeout_s=limits.idle_timeout_s, header_timeout_s=limits.header_timeout_s,
                              linger_timeout_s=limits.linger_timeout_s, max_headers=limits.max_headers,
                              max_line_bytes=limits.max_line_bytes),
            gate=ConnectionGate(limits.max_connections, limits.max_connections_per_ip),
            metrics=app[METRICS_KEY], logger=app[LOGGER_KEY])
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = EdgeSite(self._runner, self.host, self.requested_port, self.edge, ssl_context=self._ssl_context,
                        access_log=None)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.port = int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the API server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl_context else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
