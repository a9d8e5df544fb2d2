"""HTTP-layer behaviour of the REST API: routing, error mapping, body and batch limits, the event
stream's limits. These run against a small scripted NodeService so each HTTP concern can be forced
(a full mempool, a commit that never comes, a bug in the service); everything the node itself decides
is tested against a real node in tests/integration/test_api_node.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate as validate_openapi

from ledger.errors import Rejected
from ledger.keys import PrivateKey
from ledger.tx import Transaction, Transfer, decode_tx, sign_tx
from node.api.app import EVENTS_KEY, ApiLimits, ApiServer, make_app
from node.api.errors import STATUS_BY_CODE
from node.metrics import NodeMetrics
from node.service import SubmitOutcome, TxStatus

CHAIN = "ledger-test"
KEY = PrivateKey.from_seed(bytes(range(32)))
OTHER = PrivateKey.from_seed(bytes(range(1, 33)))


def signed(nonce: int = 0, amount: int = 5) -> dict[str, Any]:
    return sign_tx(KEY, CHAIN, nonce, Transfer(OTHER.address, "LDG", amount)).to_json()


class ScriptedService:
    """A NodeService whose answers the test sets: refusal codes, commit results, event streams."""

    chain_id = CHAIN
    node_id = KEY.address

    def __init__(self) -> None:
        self.refuse: dict[int, SubmitOutcome] = {}  # nonce -> outcome to answer instead of accepting
        self.committed: dict[str, TxStatus] = {}
        self.submitted: list[Any] = []
        self.events_list: list[dict[str, Any]] = []
        self.endless_event: dict[str, Any] | None = None
        self.events_done = asyncio.Event()
        self.fail_status = False
        self.consensus_view: dict[str, Any] = {}  # extra /v1/status fields: consensus_health, liveness

    async def submit(self, txs: list[Any]) -> list[SubmitOutcome]:
        out = []
        for obj in txs:
            try:
                tx = obj if isinstance(obj, Transaction) else decode_tx(obj)
            except Rejected as exc:
                out.append(SubmitOutcome(None, exc.code, exc.message))
                continue
            self.submitted.append(obj)
            out.append(self.refuse.get(tx.nonce, SubmitOutcome(tx.hash)))
        return out

    async def wait_committed(self, tx_hash: str, timeout_s: float) -> TxStatus | None:
        return self.committed.get(tx_hash)

    def tx_status(self, tx_hash: str) -> TxStatus | None:
        return self.committed.get(tx_hash)

    def block(self, height: int | None) -> dict[str, Any] | None:
        return None

    def account(self, address: str) -> dict[str, Any]:
        return {"address": address, "nonce": 0, "balances": {}}

    def record(self, owner: str, key: str) -> dict[str, Any] | None:
        if key == "a/b c":
            return {"owner": owner, "key": key, "value": "v", "height": 1, "tx": "0" * 64}
        return None

    def status(self) -> dict[str, Any]:
        if self.fail_status:
            raise KeyError("a bug in the service")
        return {"node_id": self.node_id, "chain_id": CHAIN, "consensus": "pbft", "height": 0,
                "latest_hash": "0" * 64, "validators": [], "peers": [], **self.consensus_view}

    async def events(self, from_height: int | None) -> AsyncIterator[dict[str, Any]]:
        for event in self.events_list:
            if from_height is None or event["height"] >= from_height:
                yield event
        while self.endless_event is not None:
            yield self.endless_event
        await self.events_done.wait()


LIMITS = ApiLimits(max_body_bytes=64 * 1024, max_batch_txs=4, commit_wait_timeout_s=2.0,
                   max_ws_subscribers=2, ws_send_timeout_s=0.5, ws_heartbeat_s=5.0, shutdown_timeout_s=1.0)


@pytest.fixture
async def api() -> AsyncIterator[tuple[ScriptedService, ApiServer, NodeMetrics]]:
    service = ScriptedService()
    metrics = NodeMetrics()
    server = ApiServer(make_app(service, metrics, LIMITS), "127.0.0.1", 0, LIMITS.shutdown_timeout_s)
    await server.start()
    try:
        yield service, server, metrics
    finally:
        service.events_done.set()
        service.endless_event = None
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, server: ApiServer, method: str, path: str,
               **kwargs: Any) -> tuple[int, Any, Any]:
    async with http.request(method, server.url + path, **kwargs) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text[:200])
        return resp.status, json.loads(text), resp.headers


async def poll_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll a condition the server exposes no event for, up to a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def assert_error(status: int, body: Any, want_status: int, want_code: str) -> None:
    assert (status, body["error"]["code"]) == (want_status, want_code), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"]


# --- routing -------------------------------------------------------------------------------------


async def test_unknown_route_is_json_404(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    for method, path in (("GET", "/nope"), ("POST", "/v1/nope"), ("GET", "/v1/status/x"), ("DELETE", "/v1")):
        status, body, _ = await call(http, server, method, path)
        assert_error(status, body, 404, "not_found")


async def test_wrong_method_is_json_405_with_allow(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    status, body, headers = await call(http, server, "GET", "/v1/transactions")
    assert_error(status, body, 405, "method_not_allowed")
    assert "POST" in headers["Allow"]
    status, body, _ = await call(http, server, "PUT", "/v1/status")
    assert_error(status, body, 405, "method_not_allowed")


@pytest.mark.parametrize(("path", "code"), [
    ("/v1/transactions/xyz", "invalid_hash"),
    ("/v1/transactions/" + "g" * 64, "invalid_hash"),
    ("/v1/accounts/abc", "invalid_address"),
    ("/v1/records/abc/key", "invalid_address"),
    ("/v1/records/" + "a" * 64 + "/" + "k" * 129, "invalid_record_key"),
    ("/v1/blocks/-1", "invalid_height"),
    ("/v1/blocks/1.5", "invalid_height"),
    ("/v1/blocks/ten", "invalid_height"),
    ("/v1/blocks/99999999999999999999", "invalid_height"),
    ("/v1/status?verbose=1", "invalid_query"),
    ("/v1/events?from_height=x", "invalid_query"),
])
async def test_bad_path_and_query_params_are_400(api: Any, http: aiohttp.ClientSession, path: str,
                                                 code: str) -> None:
    _, server, _ = api
    status, body, _ = await call(http, server, "GET", path)
    assert_error(status, body, 400, code)


async def test_uppercase_hex_and_record_keys_with_slashes(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    status, body, _ = await call(http, server, "GET", "/v1/accounts/" + "AB" * 32)
    assert status == 200 and body["address"] == "ab" * 32
    status, body, _ = await call(http, server, "GET", "/v1/records/" + "ab" * 32 + "/a%2Fb%20c")
    assert status == 200 and body["key"] == "a/b c"
    status, body, _ = await call(http, server, "GET", "/v1/records/" + "ab" * 32 + "/other")
    assert_error(status, body, 404, "record_not_found")
    status, body, _ = await call(http, server, "GET", "/v1/transactions/" + "ab" * 32)
    assert_error(status, body, 404, "tx_not_found")
    status, body, _ = await call(http, server, "GET", "/v1/blocks/latest")
    assert_error(status, body, 404, "block_not_found")


# --- body parsing and limits ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"", b"   ", b"{", b"{\"body\": }", b"\xff\xfe{}", b"[1, 2,]", b'{"a": NaN}', b'{"a": Infinity}',
    b'{"body": 1, "body": 2}', b"[" * 30_000 + b"]" * 30_000, b'{"n": ' + b"9" * 5000 + b"}",
])
async def test_bodies_that_are_not_json_are_400_invalid_json(api: Any, http: aiohttp.ClientSession,
                                                             raw: bytes) -> None:
    service, server, _ = api
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=raw,
                                 headers={"Content-Type": "application/json"})
    assert_error(status, body, 400, "invalid_json")
    assert service.submitted == []


@pytest.mark.parametrize("value", ["a string", 42, None, True])
async def test_json_that_is_not_a_tx_or_array_is_400_malformed(api: Any, http: aiohttp.ClientSession,
                                                               value: Any) -> None:
    _, server, _ = api
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=json.dumps(value))
    assert_error(status, body, 400, "malformed")


async def test_empty_and_oversized_batches(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=[])
    assert_error(status, body, 400, "empty_batch")
    status, body, _ = await call(http, server, "POST", "/v1/transactions",
                                 json=[signed(n) for n in range(LIMITS.max_batch_txs + 1)])
    assert_error(status, body, 413, "batch_too_large")
    assert service.submitted == []


async def test_declared_oversized_body_is_refused_before_it_is_sent(api: Any) -> None:
    """The 413 arrives although not one byte of the announced 2 MiB body was sent: nothing is buffered."""
    _, server, _ = api
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2097152\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413 ")
        assert b"application/json" in head
    finally:
        writer.close()


async def test_streamed_oversized_body_is_cut_off_at_the_limit(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    sent = 0

    async def two_mib() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b" " * 65536
        for _ in range(32):
            sent += len(chunk)
            yield chunk

    # No Content-Length: aiohttp sends the generator chunked, so only the streamed cap can stop it.
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=two_mib())
    assert_error(status, body, 413, "body_too_large")
    assert service.submitted == []


async def test_two_mib_json_body_is_413(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    tx = signed()
    tx["pad"] = "x" * (2 << 20)
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=tx)
    assert_error(status, body, 413, "body_too_large")
    assert service.submitted == []
    status, _, _ = await call(http, server, "GET", "/healthz")
    assert status == 200


# --- submission outcomes --------------------------------------------------------------------------


async def test_single_tx_accepted_is_202_pending(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    tx = signed()
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=tx)
    assert status == 202
    assert body == {"hash": decode_tx(tx).hash, "status": "pending"}


@pytest.mark.parametrize("code", sorted(c for c, s in STATUS_BY_CODE.items() if s in (409, 422, 429, 503)))
async def test_node_refusal_codes_map_through_the_one_table(api: Any, http: aiohttp.ClientSession,
                                                            code: str) -> None:
    service, server, _ = api
    service.refuse[0] = SubmitOutcome("ab" * 32, code, f"refused: {code}", retry_after_s=3)
    status, body, headers = await call(http, server, "POST", "/v1/transactions", json=signed(0))
    assert_error(status, body, STATUS_BY_CODE[code], code)
    assert body["hash"] == "ab" * 32
    if status in (429, 503):
        assert headers["Retry-After"] == "3"


async def test_unknown_refusal_code_is_a_422_not_a_500(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    service.refuse[0] = SubmitOutcome(None, "some_new_rule", "refused by a rule this API does not know")
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=signed(0))
    assert_error(status, body, 422, "some_new_rule")


async def test_decode_errors_from_the_service_are_4xx(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    tx = signed()
    tx["extra"] = 1
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=tx)
    assert_error(status, body, 400, "malformed")
    tx = signed()
    tx["body"]["payload"]["amount"] = 1.5
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=tx)
    assert_error(status, body, 422, "invalid_amount")


async def test_batch_answers_one_entry_per_tx_in_order(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    service.refuse[1] = SubmitOutcome("cd" * 32, "nonce_used", "nonce 1 was already used")
    txs = [signed(0), signed(1), {"not": "a tx"}]
    status, body, _ = await call(http, server, "POST", "/v1/transactions", json=txs)
    assert status == 202
    assert body[0] == {"hash": decode_tx(txs[0]).hash, "status": "pending"}
    assert body[1]["status"] == "rejected" and body[1]["error"]["code"] == "nonce_used"
    assert body[2]["hash"] is None and body[2]["error"]["code"] == "malformed"


async def test_canonical_bytes_take_the_fast_path_with_the_same_answers(api: Any,
                                                                        http: aiohttp.ClientSession) -> None:
    """A body in canonical form (what a signing client sends) is decoded without the JSON parser;
    the API's answers and limits are those of the strict path."""
    service, server, _ = api
    txs = [sign_tx(KEY, CHAIN, n, Transfer(OTHER.address, "LDG", 5)) for n in range(5)]
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=txs[0].encode())
    assert (status, body) == (202, {"hash": txs[0].hash, "status": "pending"})
    array = b"[" + b",".join(t.encode() for t in txs[1:3]) + b"]"
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=array)
    assert status == 202 and [e["hash"] for e in body] == [txs[1].hash, txs[2].hash]
    assert all(isinstance(t, Transaction) for t in service.submitted)  # decoded before the service
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=b"[" + b",".join(
        t.encode() for t in txs) + b"]")
    assert_error(status, body, 413, "batch_too_large")  # LIMITS.max_batch_txs is 4
    status, body, _ = await call(http, server, "POST", "/v1/transactions?wait=commit", data=array)
    assert_error(status, body, 400, "invalid_query")
    status, body, _ = await call(http, server, "POST", "/v1/transactions", data=b"[]")
    assert_error(status, body, 400, "empty_batch")


async def test_batch_with_nothing_accepted_answers_the_first_refusal(api: Any,
                                                                     http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    service.refuse[0] = SubmitOutcome("ab" * 32, "mempool_full", "the mempool is full", retry_after_s=2)
    service.refuse[1] = SubmitOutcome("cd" * 32, "mempool_full", "the mempool is full", retry_after_s=2)
    status, body, headers = await call(http, server, "POST", "/v1/transactions", json=[signed(0), signed(1)])
    assert_error(status, body, 503, "mempool_full")
    assert headers["Retry-After"] == "2"
    assert [r["error"]["code"] for r in body["results"]] == ["mempool_full", "mempool_full"]


async def test_wait_commit(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    tx = signed()
    tx_hash = decode_tx(tx).hash
    status, body, _ = await call(http, server, "POST", "/v1/transactions?wait=commit&timeout_s=0.1", json=tx)
    assert_error(status, body, 504, "commit_timeout")
    assert body["hash"] == tx_hash
    service.committed[tx_hash] = TxStatus(tx_hash, "committed", 3, 0, {"code": "ok"})
    status, body, _ = await call(http, server, "POST", "/v1/transactions?wait=commit", json=tx)
    assert status == 200
    assert body == {"hash": tx_hash, "status": "committed", "height": 3, "index": 0, "result": {"code": "ok"}}


@pytest.mark.parametrize("query", ["wait=now", "wait=commit&timeout_s=0", "wait=commit&timeout_s=99",
                                   "wait=commit&timeout_s=nan", "timeout_s=1", "wait=commit&wait=commit",
                                   "fast=1"])
async def test_bad_submit_queries_are_400(api: Any, http: aiohttp.ClientSession, query: str) -> None:
    service, server, _ = api
    status, body, _ = await call(http, server, "POST", "/v1/transactions?" + query, json=signed())
    assert_error(status, body, 400, "invalid_query")
    assert service.submitted == []


async def test_wait_commit_takes_a_single_tx(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    status, body, _ = await call(http, server, "POST", "/v1/transactions?wait=commit", json=[signed()])
    assert_error(status, body, 400, "invalid_query")


# --- failures inside the node -------------------------------------------------------------------


async def test_a_bug_in_the_service_is_a_json_500_and_logged(api: Any, http: aiohttp.ClientSession,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    service, server, _ = api
    service.fail_status = True
    with caplog.at_level(logging.ERROR, logger="ledgerd.api"):
        status, body, _ = await call(http, server, "GET", "/v1/status", headers={"Accept": "text/html"})
    assert_error(status, body, 500, "internal_error")
    assert "KeyError" not in json.dumps(body)
    assert any("internal error" in r.getMessage() and r.exc_info for r in caplog.records)
    service.fail_status = False
    status, _, _ = await call(http, server, "GET", "/v1/status")
    assert status == 200


# --- metrics and the OpenAPI document -------------------------------------------------------------


async def test_metrics_record_latency_per_route_template(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    await call(http, server, "GET", "/v1/status")
    await call(http, server, "GET", "/v1/accounts/" + "ab" * 32)
    await call(http, server, "GET", "/no/such/route")
    async with http.get(server.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'route="/v1/status",status="200"' in text
    assert 'route="/v1/accounts/{address}",status="200"' in text
    assert 'route="unmatched",status="404"' in text
    assert "ab" * 32 not in text


async def test_openapi_document_is_valid_and_lists_every_route(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    status, doc, _ = await call(http, server, "GET", "/openapi.json")
    assert status == 200
    validate_openapi(doc)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for route in server.app.router.routes():
        if route.resource is not None and (route.resource.name or "").startswith("explorer"):
            continue  # the explorer's HTML pages and files, not part of the JSON API
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            served.add((path.replace("{key:.+}", "{key}"), route.method))
    assert served == documented
    assert doc["x-error-codes"] == {code: STATUS_BY_CODE[code] for code in doc["x-error-codes"]}
    assert set(doc["x-error-codes"]) == set(STATUS_BY_CODE)


async def test_commit_timeout_carries_the_nodes_view_of_consensus(api: Any, http: aiohttp.ClientSession) -> None:
    """A 504 says why nothing committed (the chain's state, as /v1/status has it), in fields a client
    can read and in its message, and never words an accepted transaction as refused."""
    from openapi_schema_validator import OAS31Validator

    service, server, _ = api
    liveness = {"validators": 4, "max_faulty": 1, "quorum": 3, "validators_connected": 2,
                "seconds_since_commit": 40.2, "rounds_without_commit": 7}
    health = "stalled: only 2 of the 3 validators needed are connected"
    service.consensus_view = {"consensus_health": health, "liveness": liveness}
    tx = signed()
    status, body, _ = await call(http, server, "POST", "/v1/transactions?wait=commit&timeout_s=0.5", json=tx)
    assert_error(status, body, 504, "commit_timeout")
    assert body["hash"] == decode_tx(tx).hash and body["waited_s"] == 0.5
    assert body["consensus_health"] == health and body["liveness"] == liveness
    message = body["error"]["message"]
    assert message.startswith("accepted, not committed within 0.5s") and health in message, message
    assert "refused" not in message
    _, doc, _ = await call(http, server, "GET", "/openapi.json")
    schema = {**doc["paths"]["/v1/transactions"]["post"]["responses"]["504"]["content"]["application/json"]
              ["schema"], "components": doc["components"]}
    OAS31Validator(schema).validate(body)


# --- the event stream's limits --------------------------------------------------------------------


async def test_plain_get_on_events_is_426(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    status, body, _ = await call(http, server, "GET", "/v1/events")
    assert_error(status, body, 426, "upgrade_required")


async def test_event_stream_resumes_from_height(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    service.events_list = [{"type": "block", "height": h} for h in (1, 2, 3)]
    async with http.ws_connect(server.url + "/v1/events?from_height=2") as ws:
        got = [await ws.receive_json(timeout=5), await ws.receive_json(timeout=5)]
    assert [e["height"] for e in got] == [2, 3]


async def test_a_stream_the_node_ends_for_lag_closes_with_1008(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    service.events_list = [{"type": "block", "height": 1},
                           {"type": "error", "code": "subscriber_too_slow", "message": "resume from 2"}]
    service.events_done.set()
    async with http.ws_connect(server.url + "/v1/events") as ws:
        assert (await ws.receive_json(timeout=5))["height"] == 1
        assert (await ws.receive_json(timeout=5))["code"] == "subscriber_too_slow"
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1008)


async def test_a_stream_ends_with_1000_when_the_node_stops(api: Any, http: aiohttp.ClientSession) -> None:
    service, server, _ = api
    service.events_done.set()
    async with http.ws_connect(server.url + "/v1/events") as ws:
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1000)


async def test_subscriber_limit_answers_503_with_retry_after(api: Any, http: aiohttp.ClientSession) -> None:
    _, server, _ = api
    async with http.ws_connect(server.url + "/v1/events"), http.ws_connect(server.url + "/v1/events"):
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        status, body, headers = await call(http, server, "GET", "/v1/events", headers=upgrade)
        assert_error(status, body, 503, "too_many_subscribers")
        assert int(headers["Retry-After"]) >= 1
    # Closed streams free their slots.
    async with http.ws_connect(server.url + "/v1/events") as ws:
        assert not ws.closed


async def test_slow_consumer_is_cut_off_with_1008(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A client that stops reading must not grow the node's memory: its stream is closed instead."""
    service, server, _ = api
    caplog.set_level(logging.WARNING, logger="ledgerd.api")
    service.endless_event = {"type": "block", "height": 1, "pad": "x" * 65536}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        events = server.app[EVENTS_KEY]
        assert await poll_until(lambda: bool(events.subscribers), 10), "the stream never opened"
        # The client reads nothing; the send timeout must end the stream.
        assert await poll_until(lambda: not events.subscribers, 10), "a reader that stopped was not cut off"
        assert any("too slow" in r.getMessage() for r in caplog.records)
    finally:
        sock.close()


async def test_shutdown_closes_streams_with_going_away(http: aiohttp.ClientSession) -> None:
    service = ScriptedService()
    server = ApiServer(make_app(service, NodeMetrics(), LIMITS), "127.0.0.1", 0, LIMITS.shutdown_timeout_s)
    await server.start()
    try:
        async with http.ws_connect(server.url + "/v1/events") as ws:
            stopping = asyncio.create_task(server.stop())
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1001
            await stopping
    finally:
        service.events_done.set()
        await server.stop()
