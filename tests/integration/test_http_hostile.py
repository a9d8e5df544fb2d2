"""Hostile HTTP clients against a real single-validator node's REST API, over raw sockets on port 0.

The contract: every refusal answers the JSON error `{"error": {"code", "message"}}` where HTTP still
allows an answer, is logged as one line (no traceback, nothing at ERROR), and is never counted as a
500; slow clients are cut off by named deadlines; one source cannot hold unbounded connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.testnet import make_testnet
from node.api.app import ApiServer, limits_from_config, make_app
from node.node import Node

HEADER_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.0
PER_IP = 4
MAX_BODY = 64 * 1024
SLACK_S = 2.0  # scheduling slack on a shared 2-core machine; the deadlines themselves are ~1 s


@dataclass
class Api:
    node: Node
    server: ApiServer

    @property
    def addr(self) -> tuple[str, int]:
        assert self.server.port is not None
        return "127.0.0.1", self.server.port


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    net = make_testnet(tmp_path / "net", validators=1, accounts=1)
    overrides = {"tick_ms": 10, "http_header_timeout_s": HEADER_TIMEOUT_S, "http_idle_timeout_s": IDLE_TIMEOUT_S,
                 "http_body_timeout_s": BODY_TIMEOUT_S, "http_max_connections_per_ip": PER_IP,
                 "max_body_bytes": MAX_BODY, "http_linger_timeout_s": 0.5, "ws_client_frames_per_s": 5.0}
    node = Node.open(net.node_homes[0], overrides, environ={})
    await node.start()
    server = ApiServer(make_app(node.service, node.metrics, limits_from_config(node.config),
                                logging.getLogger("ledgerd.api")), "127.0.0.1", 0, 1.0)
    try:
        await server.start()
        yield Api(node, server)
    finally:
        await server.stop()
        await node.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.headers,
                                                                                     self.body[:200])
        body = json.loads(self.body)
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), body
        assert "Traceback" not in body["error"]["message"]
        return body["error"]  # type: ignore[no-any-return]


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it stays open."""
    data = b""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def exchange(api: Api, raw: bytes, timeout_s: float = 5.0) -> Answer:
    reader, writer = await asyncio.open_connection(*api.addr)
    try:
        writer.write(raw)
        await writer.drain()
        return parse_answer(await read_until_closed(reader, timeout_s))
    finally:
        writer.close()


async def metrics_text(api: Api) -> str:
    async with aiohttp.ClientSession() as http, http.get(api.server.url + "/metrics") as resp:
        return await resp.text()


def assert_logged_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """No traceback and nothing at ERROR: a refusal is one line at INFO or WARNING."""
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]


def no_500s(metrics: str) -> bool:
    return 'status="500"' not in metrics


# --- malformed HTTP: answered 400 JSON, one log line ---------------------------------------------

POST = b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("raw", [
    pytest.param(POST + b"Content-Length: abc\r\n\r\n{}", id="bad-content-length"),
    pytest.param(POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", id="duplicate-content-length"),
    pytest.param(POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                 id="content-length-and-transfer-encoding"),
    pytest.param(POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", id="bad-chunk-size"),
    pytest.param(b"GET /v1/status?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="100kB-url"),
    pytest.param(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
                 + b"\r\n", id="2000-headers"),
    pytest.param(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20_000 + b"\r\n\r\n", id="long-header"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, id="tls-on-http-port"),
])
async def test_malformed_http_is_a_json_400_logged_as_one_line(api: Api, caplog: pytest.LogCaptureFixture,
                                                               raw: bytes) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await exchange(api, raw)
    assert answer.status == 400, answer
    assert answer.error()["code"] == "bad_request"
    assert_logged_quietly(caplog)
    assert no_500s(await metrics_text(api))


async def test_client_hanging_up_mid_body_is_not_a_500(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(*api.addr)
    writer.write(POST + b"Content-Length: 1000\r\n\r\n" + b'{"body": ' + b" " * 100)
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is now waiting for the rest of the body
    writer.transport.abort()  # a hang-up without a FIN handshake, as a crashed client does
    text = ""
    for _ in range(100):
        text = await metrics_text(api)
        if 'route="/v1/transactions",status="499"' in text:
            break
        await asyncio.sleep(0.05)
    assert 'route="/v1/transactions",status="499"' in text
    assert no_500s(text)
    assert_logged_quietly(caplog)
    gone = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno in (logging.INFO, logging.WARNING)


async def test_client_half_closing_mid_body_is_not_a_500(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp closes a connection on the client's EOF, so there is no one left to answer either."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(*api.addr)
    try:
        writer.write(POST + b"Content-Length: 1000\r\n\r\n{}")
        writer.write_eof()
        assert await read_until_closed(reader, 5.0) == b""
    finally:
        writer.close()
    text = ""
    for _ in range(100):
        text = await metrics_text(api)
        if 'status="499"' in text:
            break
        await asyncio.sleep(0.05)
    assert 'route="/v1/transactions",status="499"' in text and no_500s(text)
    assert_logged_quietly(caplog)


# --- slow clients ----------------------------------------------------------------------------------


async def test_slowloris_head_is_cut_off_at_the_header_deadline(api: Api,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A head sent one byte at a time never completes; the node answers 408 and closes the connection
    within the header deadline (not the idle timeout, which the trickle would otherwise restart)."""
    reader, writer = await asyncio.open_connection(*api.addr)
    loop = asyncio.get_running_loop()
    started = loop.time()
    head = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 1000
    reading = asyncio.create_task(read_until_closed(reader, HEADER_TIMEOUT_S + SLACK_S))
    try:
        for byte in head:
            if reading.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        received = await reading
    finally:
        reading.cancel()
        writer.close()
    elapsed = loop.time() - started
    assert elapsed < HEADER_TIMEOUT_S + SLACK_S, elapsed
    answer = parse_answer(received)
    assert answer.status == 408 and answer.error()["code"] == "request_timeout"
    assert_logged_quietly(caplog)


async def test_idle_connection_is_closed(api: Api) -> None:
    reader, writer = await asyncio.open_connection(*api.addr)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        assert await read_until_closed(reader, IDLE_TIMEOUT_S + SLACK_S) == b""
    finally:
        writer.close()
    assert loop.time() - started >= IDLE_TIMEOUT_S * 0.9


async def test_slow_body_is_answered_408(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection(*api.addr)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        writer.write(POST + b"Content-Length: 100\r\n\r\n{")
        answer = parse_answer(await read_until_closed(reader, BODY_TIMEOUT_S + SLACK_S))
    finally:
        writer.close()
    assert answer.status == 408 and answer.error()["code"] == "request_timeout"
    assert loop.time() - started >= BODY_TIMEOUT_S * 0.9
    assert_logged_quietly(caplog)


async def test_expect_continue_with_oversized_body_is_413_without_100_continue(api: Api) -> None:
    reader, writer = await asyncio.open_connection(*api.addr)
    try:
        writer.write(POST + b"Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n")
        raw = await read_until_closed(reader, 5.0)
    finally:
        writer.close()
    assert not raw.startswith(b"HTTP/1.1 100"), raw[:100]
    answer = parse_answer(raw)
    assert answer.status == 413 and answer.error()["code"] == "body_too_large"


async def test_expect_continue_within_the_limit_still_works(api: Api) -> None:
    reader, writer = await asyncio.open_connection(*api.addr)
    try:
        writer.write(POST + b"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        writer.write(b"{}")
        answer = parse_answer(await read_until_closed(reader, 5.0))
    finally:
        writer.close()
    assert answer.status == 400 and answer.error()["code"] == "malformed"


async def test_unknown_expectation_is_a_json_417(api: Api) -> None:
    answer = await exchange(api, POST + b"Content-Length: 2\r\nExpect: 200-ok\r\n\r\n{}")
    assert answer.status == 417 and answer.error()["code"] == "expectation_failed"


# --- connection limits -----------------------------------------------------------------------------


async def test_connections_per_source_are_capped(api: Api) -> None:
    held = [await asyncio.open_connection(*api.addr) for _ in range(PER_IP)]
    try:
        # A held connection is served; one more from the same address is refused at once.
        reader, writer = held[0]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5.0)).startswith(b"HTTP/1.1 200")
        extra_reader, extra_writer = await asyncio.open_connection(*api.addr)
        try:
            answer = parse_answer(await read_until_closed(extra_reader, 5.0))
        finally:
            extra_writer.close()
        assert answer.status == 429 and answer.error()["code"] == "too_many_connections"
        assert int(answer.headers["retry-after"]) >= 1
    finally:
        for _, writer in held:
            writer.close()
    # Slots are given back when connections close.
    for _ in range(100):
        answer = await exchange(api, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if answer.status == 200:
            break
        await asyncio.sleep(0.05)
    assert answer.status == 200


# --- the event stream --------------------------------------------------------------------------------


async def test_ping_flood_on_events_ends_with_a_clean_close(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(api.server.url + "/v1/events", autoping=False) as ws:
            try:
                for _ in range(5000):
                    await ws.ping(b"x" * 100)
                    if ws.closed:
                        break
            except ConnectionError:
                pass
            msg = None
            async with asyncio.timeout(5.0):
                while True:
                    msg = await ws.receive()
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                        break
            assert ws.close_code == 1008, (msg, ws.close_code)
            assert msg is not None and msg.extra == "too many client frames"
    assert_logged_quietly(caplog)
