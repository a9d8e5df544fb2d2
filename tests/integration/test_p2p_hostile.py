"""Hostile and broken peers against a real P2PNode on loopback.

The handshake must refuse keys outside the validator set, forged or replayed proofs, the wrong
chain, version or node, and must not let a silent client hold a slot. After the handshake, bad
frames are dropped and counted, a persistent offender is disconnected and penalized, and the
node goes on serving its other peers throughout.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ledger.keys import PrivateKey
from p2p import P2PConfig, P2PNode, frames, handshake
from p2p.errors import HandshakeError

CHAIN = "p2p-test"
pytestmark = pytest.mark.timeout(60)


def fast_config(**overrides: Any) -> P2PConfig:
    # Plain ws://: these tests write handshake frames by hand; TLS links are in test_p2p_mitm.
    settings: dict[str, Any] = {
        "tls": False, "listen_port": 0, "reconnect_backoff_min_s": 0.05, "reconnect_backoff_max_s": 0.3,
        "close_timeout_s": 0.5, "handshake_timeout_s": 2.0,
    }
    settings.update(overrides)
    return P2PConfig(**settings)


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


class Env:
    """One node under test (`a`), a healthy validator peer (`b`), and keys for fake validators."""

    def __init__(self, stack: AsyncExitStack, session: aiohttp.ClientSession) -> None:
        self.stack, self.session = stack, session
        self.keys = [PrivateKey.generate() for _ in range(4)]  # a, b, and two for fakes
        self.validators = [k.address for k in self.keys]
        self.inbox: list[tuple[str, str, bytes]] = []
        self.b_inbox: list[tuple[str, str, bytes]] = []
        self.a: P2PNode
        self.b: P2PNode

    @property
    def fake_key(self) -> PrivateKey:
        return self.keys[2]

    def identity(self, key: PrivateKey) -> handshake.Identity:
        return handshake.Identity(key, CHAIN, frozenset(self.validators))

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self.session.ws_connect(self.a.url)
        self.stack.push_async_callback(ws.close)
        return ws

    async def authenticated(self, key: PrivateKey) -> aiohttp.ClientWebSocketResponse:
        ws = await self.connect()
        await handshake.dial(ws, self.identity(key), self.a.node_id)
        await eventually(lambda: key.address in self.a.connected_peers(), "the fake's link")
        return ws


@asynccontextmanager
async def env(config: P2PConfig | None = None, with_b: bool = True) -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        e = Env(stack, session)
        e.a = P2PNode(config or fast_config(), e.keys[0], CHAIN, e.validators, {},
                      lambda p, t, d: e.inbox.append((p, t, d)), rng=random.Random(0))
        await e.a.start()
        stack.push_async_callback(e.a.stop)
        if with_b:
            e.b = P2PNode(fast_config(), e.keys[1], CHAIN, e.validators, {e.a.node_id: e.a.url},
                          lambda p, t, d: e.b_inbox.append((p, t, d)), rng=random.Random(1))
            await e.b.start()
            stack.push_async_callback(e.b.stop)
            await eventually(lambda: e.a.connected_peers() == [e.b.node_id], "a healthy link")
        yield e


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; the close code it sent."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code


def hello(e: Env, node_id: str, challenge: str, **changes: Any) -> str:
    frame = {"type": "hello", "version": 1, "chain_id": CHAIN, "node_id": node_id, "peer_id": e.a.node_id,
             "challenge": challenge}
    frame.update(changes)
    return json.dumps(frame)


async def read_challenge(ws: aiohttp.ClientWebSocketResponse) -> handshake.ChallengeFrame:
    msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return handshake.ChallengeFrame.model_validate_json(msg.data)


def auth(key: PrivateKey, role: str, e: Env, dialer: str, c_dialer: str, c_listener: str) -> str:
    signature = key.sign(handshake.transcript(role, CHAIN, dialer, e.a.node_id, c_dialer, c_listener))
    return json.dumps({"type": "auth", "signature": signature.hex()})


async def test_a_key_outside_the_validator_set_is_refused() -> None:
    async with env() as e:
        stranger = PrivateKey.generate()
        ws = await e.connect()
        with pytest.raises(HandshakeError) as refused:
            await handshake.dial(ws, e.identity(stranger), e.a.node_id)
        assert refused.value.code == "closed" and ws.close_code == handshake.CLOSE_NOT_ALLOWED
        assert e.a.counters["handshake_failed_not_allowed"] == 1
        assert e.a.connected_peers() == [e.b.node_id]


async def test_a_forged_handshake_signature_is_refused() -> None:
    async with env() as e:
        victim = e.fake_key.address
        impostor = PrivateKey.generate()
        # Claims a validator's id but signs with another key.
        ws = await e.connect()
        await ws.send_str(hello(e, victim, "11" * 32))
        challenge = await read_challenge(ws)
        await ws.send_str(auth(impostor, "dialer", e, victim, "11" * 32, challenge.challenge))
        assert await closed_with(ws) == handshake.CLOSE_BAD_SIGNATURE
        # The right key, but a signature made for the other role.
        ws = await e.connect()
        await ws.send_str(hello(e, victim, "22" * 32))
        challenge = await read_challenge(ws)
        await ws.send_str(auth(e.fake_key, "listener", e, victim, "22" * 32, challenge.challenge))
        assert await closed_with(ws) == handshake.CLOSE_BAD_SIGNATURE
        assert e.a.counters["handshake_failed_bad_signature"] == 2
        assert victim not in e.a.connected_peers()


async def test_a_replayed_handshake_is_refused() -> None:
    async with env() as e:
        key = e.fake_key
        # A genuine session, recorded.
        ws = await e.connect()
        recorded_hello = hello(e, key.address, "33" * 32)
        await ws.send_str(recorded_hello)
        first = await read_challenge(ws)
        recorded_auth = auth(key, "dialer", e, key.address, "33" * 32, first.challenge)
        await ws.send_str(recorded_auth)
        assert (await ws.receive()).type is aiohttp.WSMsgType.TEXT  # the listener's auth: accepted
        await eventually(lambda: key.address in e.a.connected_peers(), "the genuine session")
        await ws.close()
        await eventually(lambda: key.address not in e.a.connected_peers(), "the genuine session to end")
        # The same bytes again: the listener's challenge is fresh, so the old proof is worthless.
        ws = await e.connect()
        await ws.send_str(recorded_hello)
        second = await read_challenge(ws)
        assert second.challenge != first.challenge
        await ws.send_str(recorded_auth)
        assert await closed_with(ws) == handshake.CLOSE_BAD_SIGNATURE
        assert e.a.counters["handshake_failed_bad_signature"] == 1
        assert key.address not in e.a.connected_peers()


@pytest.mark.parametrize(("changes", "code", "counter"), [
    ({"chain_id": "another-chain"}, handshake.CLOSE_WRONG_CHAIN, "handshake_failed_wrong_chain"),
    ({"version": 2}, handshake.CLOSE_VERSION, "handshake_failed_version"),
    ({"peer_id": "ab" * 32}, handshake.CLOSE_WRONG_PEER, "handshake_failed_wrong_peer"),
    ({"extra": "field"}, handshake.CLOSE_MALFORMED, "handshake_failed_malformed"),
])
async def test_a_hello_for_another_chain_version_or_node_is_refused(changes: dict[str, Any], code: int,
                                                                   counter: str) -> None:
    async with env(with_b=False) as e:
        ws = await e.connect()
        await ws.send_str(hello(e, e.fake_key.address, "44" * 32, **changes))
        assert await closed_with(ws) == code
        assert e.a.counters[counter] == 1 and e.a.counters["handshake_failed"] == 1


async def test_our_dialer_refuses_a_listener_that_cannot_prove_its_key() -> None:
    async with env(with_b=False) as e:
        claimed = e.fake_key.address
        impostor = PrivateKey.generate()

        async def fake_listener(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            got = handshake.Hello.model_validate_json((await ws.receive()).data)
            challenge = handshake.ChallengeFrame(type="challenge", version=1, chain_id=CHAIN, node_id=claimed,
                                                 challenge="55" * 32)
            await ws.send_str(challenge.model_dump_json())
            await ws.receive()
            signature = impostor.sign(handshake.transcript("listener", CHAIN, got.node_id, claimed,
                                                           got.challenge, "55" * 32))
            await ws.send_str(json.dumps({"type": "auth", "signature": signature.hex()}))
            await ws.receive()
            return ws

        app = web.Application()
        app.router.add_get("/p2p/v1", fake_listener)
        runner = web.AppRunner(app)
        await runner.setup()
        e.stack.push_async_callback(runner.cleanup)
        sock = socket.create_server(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()

        e.a.add_peer(claimed, f"ws://127.0.0.1:{sock.getsockname()[1]}")
        await eventually(lambda: e.a.counters["handshake_failed_bad_signature"] >= 1, "the dialer to refuse")
        assert claimed not in e.a.connected_peers()
        assert "signature" in e.a.peer_status()[claimed]["last_error"]


async def test_a_silent_client_times_out_and_frees_its_handshake_slot() -> None:
    async with env(fast_config(handshake_timeout_s=0.3, max_pending_handshakes=1), with_b=False) as e:
        # Upgrades to WebSocket, then says nothing; the slot is taken before the upgrade is answered.
        silent = await e.connect()
        with pytest.raises(aiohttp.WSServerHandshakeError) as busy:
            await e.session.ws_connect(e.a.url)
        assert busy.value.status == 503 and e.a.counters["handshake_failed_busy"] == 1

        assert await closed_with(silent) == handshake.CLOSE_MALFORMED
        assert e.a.counters["handshake_failed_timeout"] == 1

        # The slot is free again: a real validator gets in.
        b = P2PNode(fast_config(), e.keys[1], CHAIN, e.validators, {e.a.node_id: e.a.url},
                    lambda p, t, d: None)
        await b.start()
        e.stack.push_async_callback(b.stop)
        await eventually(lambda: e.a.connected_peers() == [b.node_id], "the real validator")

        # A raw TCP client that never even sends its HTTP upgrade is closed after the same timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", e.a.port)
        try:
            async with asyncio.timeout(10):
                assert await reader.read() == b""
        finally:
            writer.close()


async def test_bad_frames_are_dropped_and_a_persistent_offender_is_disconnected_and_penalized() -> None:
    config = fast_config(max_bad_frames_before_disconnect=3, max_frame_bytes=64 * 1024,
                         hard_max_frame_bytes=256 * 1024, penalty_min_s=60, penalty_max_s=120)
    async with env(config) as e:
        key = e.fake_key
        ws = await e.authenticated(key)
        await ws.send_bytes(b"\x02" + frames.encode_message("txs", b"from the future")[1:])  # version
        await ws.send_bytes(b"\x01\x00\x05hello")  # malformed
        await ws.send_bytes(frames.encode_message("txs", b"x" * (64 * 1024)))  # above max_frame_bytes
        await ws.send_bytes(frames.encode_message("txs", b"still heard"))
        await eventually(lambda: (key.address, "txs", b"still heard") in e.inbox, "the good frame")
        dropped = [e.a.counters[f"frames_dropped_{r}"] for r in ("version", "malformed", "oversize")]
        assert dropped == [1, 1, 1]
        assert key.address in e.a.connected_peers()

        await ws.send_str("a text frame after the handshake")  # the fourth strike
        assert await closed_with(ws) == handshake.CLOSE_BAD_FRAMES
        assert e.a.counters["frames_dropped_unexpected"] == 1
        assert e.a.counters["peers_disconnected_bad_frames"] == 1
        await eventually(lambda: key.address not in e.a.connected_peers(), "the offender to be gone")
        assert e.a.peer_status()[key.address]["penalized_for_s"] > 0

        # Penalized: even a perfect handshake is refused for now.
        ws = await e.connect()
        with pytest.raises(HandshakeError):
            await handshake.dial(ws, e.identity(key), e.a.node_id)
        assert ws.close_code == handshake.CLOSE_PENALIZED
        assert e.a.counters["handshake_failed_penalized"] == 1

        # The honest peer never noticed.
        assert e.a.connected_peers() == [e.b.node_id]
        assert e.a.send(e.b.node_id, "consensus", b"ping") and e.b.send(e.a.node_id, "consensus", b"pong")
        await eventually(lambda: (e.a.node_id, "consensus", b"ping") in e.b_inbox, "a -> b")
        await eventually(lambda: (e.b.node_id, "consensus", b"pong") in e.inbox, "b -> a")


async def test_a_frame_above_the_hard_limit_disconnects_at_once() -> None:
    config = fast_config(max_frame_bytes=64 * 1024, hard_max_frame_bytes=128 * 1024)
    async with env(config) as e:
        key = e.fake_key
        ws = await e.authenticated(key)
        await ws.send_bytes(frames.encode_message("sync", b"y" * (200 * 1024)))
        assert await closed_with(ws) == 1009  # WebSocket "message too big"
        await eventually(lambda: key.address not in e.a.connected_peers(), "the disconnect")
        assert e.a.counters["frames_dropped_oversize"] == 1
        assert e.a.counters["peers_disconnected_bad_frames"] == 1
        assert e.a.connected_peers() == [e.b.node_id]


async def test_a_peer_that_stops_answering_pings_is_dropped() -> None:
    async with env(fast_config(ping_interval_s=0.2)) as e:
        key = e.fake_key
        await e.authenticated(key)  # and then never reads again, so it never answers a ping
        await eventually(lambda: key.address not in e.a.connected_peers(), "the ping timeout")
        assert e.a.connected_peers() == [e.b.node_id]  # b answers its pings and stays
