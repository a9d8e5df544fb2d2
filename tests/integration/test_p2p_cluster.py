"""Real P2PNodes on loopback: mesh, gossip, request/response, tie-break, reconnect, back-pressure.

Every node binds port 0 and reads its port back; every node is stopped in a `finally` (the exit
stack), even when an assertion fails. Waiting is polling with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest

from ledger.keys import PrivateKey
from p2p import (
    P2PConfig,
    P2PNode,
    PeerUnavailable,
    RemoteError,
    RequestRefused,
    RequestTimeout,
    TopicChannel,
    handshake,
)

CHAIN = "p2p-test"
pytestmark = pytest.mark.timeout(60)


def fast_config(**overrides: Any) -> P2PConfig:
    settings: dict[str, Any] = {
        "listen_port": 0, "reconnect_backoff_min_s": 0.05, "reconnect_backoff_max_s": 0.3,
        "close_timeout_s": 0.5, "handshake_timeout_s": 2.0, "request_timeout_s": 2.0,
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


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, bytes]] = []

    def __call__(self, peer_id: str, topic: str, payload: bytes) -> None:
        self.items.append((peer_id, topic, payload))

    def has(self, peer_id: str, topic: str, payload: bytes) -> bool:
        return (peer_id, topic, payload) in self.items


class Cluster:
    def __init__(self, stack: AsyncExitStack, keys: list[PrivateKey], config: P2PConfig) -> None:
        self.stack, self.keys, self.config = stack, keys, config
        self.validators = [k.address for k in keys]
        self.nodes: list[P2PNode] = []
        self.inboxes: list[Inbox] = []

    async def start_node(self, index: int, config: P2PConfig | None = None,
                         peers: dict[str, str] | None = None) -> P2PNode:
        inbox = Inbox()
        node = P2PNode(config or self.config, self.keys[index], CHAIN, self.validators, peers or {}, inbox,
                       rng=random.Random(index))
        await node.start()
        self.stack.push_async_callback(node.stop)
        self.nodes.append(node)
        self.inboxes.append(inbox)
        return node

    def mesh(self) -> None:
        for a in self.nodes:
            for b in self.nodes:
                a.add_peer(b.node_id, b.url)

    def fully_connected(self) -> bool:
        return all(len(n.connected_peers()) == len(self.nodes) - 1 for n in self.nodes)


@asynccontextmanager
async def cluster(size: int, config: P2PConfig | None = None) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        c = Cluster(stack, [PrivateKey.generate() for _ in range(size)], config or fast_config())
        for i in range(size):
            await c.start_node(i)
        yield c


def one_link_per_pair(nodes: list[P2PNode]) -> bool:
    """Each pair sees exactly one live connection, with the two ends agreeing on who dialed."""
    for a in nodes:
        if a.counters["connections_opened"] - a.counters["connections_closed"] != len(nodes) - 1:
            return False
        for b in nodes:
            if a is not b:
                ends = {a.peer_status()[b.node_id]["direction"], b.peer_status()[a.node_id]["direction"]}
                if ends != {"inbound", "outbound"}:
                    return False
    return True


async def test_four_nodes_form_a_full_mesh_and_gossip_reaches_everyone() -> None:
    async with cluster(4) as c:
        c.mesh()  # every node dials every other: each pair races, the tie-break must leave one link
        await eventually(c.fully_connected, "a full mesh")
        await eventually(lambda: one_link_per_pair(c.nodes), "one connection per pair")
        n0, n1, n2, n3 = c.nodes

        assert n0.broadcast("consensus", b"prevote") == 3
        prevote = (n0.node_id, "consensus", b"prevote")
        await eventually(lambda: all(c.inboxes[i].has(*prevote) for i in (1, 2, 3)), "the broadcast")
        assert not c.inboxes[0].items  # a broadcast does not come back to its sender

        assert n1.send(n2.node_id, "txs", b"batch")
        await eventually(lambda: c.inboxes[2].has(n1.node_id, "txs", b"batch"), "the direct message")
        assert not any(t == "txs" for _, t, _ in c.inboxes[3].items)

        # The engine's view: one topic as a byte transport.
        channel = TopicChannel(n3, "consensus")
        assert channel.broadcast(b"commit") == 3 and channel.send(n0.node_id, b"direct")
        await eventually(lambda: c.inboxes[0].has(n3.node_id, "consensus", b"direct"), "the channel send")

        # In order, per connection.
        for k in range(50):
            assert n2.send(n3.node_id, "status", k.to_bytes(2, "big"))
        await eventually(lambda: sum(t == "status" for _, t, _ in c.inboxes[3].items) == 50, "50 messages")
        got = [int.from_bytes(p, "big") for _, t, p in c.inboxes[3].items if t == "status"]
        assert got == list(range(50))

        assert n0.send(PrivateKey.generate().address, "txs", b"x") is False
        assert n0.counters["send_not_connected"] == 1
    # stop() cancelled and awaited everything the nodes started: no task outlives its node.
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_simultaneous_dial_leaves_exactly_the_lower_ids_outbound_connection() -> None:
    for _ in range(3):
        async with cluster(2) as c:
            a, b = c.nodes
            a.add_peer(b.node_id, b.url)  # both dial in the same loop iteration: a true race
            b.add_peer(a.node_id, a.url)
            await eventually(c.fully_connected, "a connection")
            await eventually(lambda: one_link_per_pair(c.nodes), "exactly one connection")
            low, high = sorted(c.nodes, key=lambda n: n.node_id)
            assert low.peer_status()[high.node_id]["direction"] == "outbound"
            assert high.peer_status()[low.node_id]["direction"] == "inbound"
            # The link that survived carries traffic both ways.
            assert low.send(high.node_id, "consensus", b"l") and high.send(low.node_id, "consensus", b"h")
            low_inbox, high_inbox = c.inboxes[c.nodes.index(low)], c.inboxes[c.nodes.index(high)]
            low_id, high_id = low.node_id, high.node_id
            await eventually(lambda: high_inbox.has(low_id, "consensus", b"l")  # noqa: B023
                             and low_inbox.has(high_id, "consensus", b"h"), "traffic")  # noqa: B023


async def test_request_response_errors_and_timeouts() -> None:
    async with cluster(2, fast_config(max_concurrent_requests_per_peer=1, max_frame_bytes=256 * 1024)) as c:
        a, b = c.nodes
        a.add_peer(b.node_id, b.url)
        await eventually(c.fully_connected, "a connection")
        release = asyncio.Event()

        async def blocks(peer_id: str, payload: bytes) -> bytes:
            if payload == b"unknown":
                raise RequestRefused("unknown_height", "no such block")
            if payload == b"crash":
                raise ZeroDivisionError("handler bug")
            if payload == b"slow":
                await release.wait()
            if payload == b"everything":
                return b"z" * (256 * 1024)
            return b"blocks:" + payload + b" for " + peer_id[:4].encode()

        async def echo(peer_id: str, payload: bytes) -> bytes:
            return payload

        b.register_handler("sync", blocks)
        b.register_handler("echo", echo)
        assert await a.request(b.node_id, "sync", b"1-10") == b"blocks:1-10 for " + a.node_id[:4].encode()
        largest = bytes(range(256)) * (a.max_payload_bytes // 256) + b"!" * (a.max_payload_bytes % 256)
        assert await a.request(b.node_id, "echo", largest) == largest
        with pytest.raises(RemoteError) as remote:  # the answer would not fit in a frame
            await a.request(b.node_id, "sync", b"everything")
        assert remote.value.code == "response_too_large"

        with pytest.raises(RemoteError) as remote:
            await a.request(b.node_id, "sync", b"unknown")
        assert remote.value.code == "unknown_height" and remote.value.message == "no such block"
        with pytest.raises(RemoteError) as remote:
            await a.request(b.node_id, "sync", b"crash")
        assert remote.value.code == "handler_error" and b.counters["requests_handler_error"] == 1
        with pytest.raises(RemoteError) as remote:
            await a.request(b.node_id, "nothing-here", b"")
        assert remote.value.code == "no_handler"

        # A timeout is clean: typed error, nothing left pending, and the late answer is discarded.
        with pytest.raises(RequestTimeout):
            await a.request(b.node_id, "sync", b"slow", timeout_s=0.2)
        assert a.peer_status()[b.node_id]["requests_pending"] == 0
        assert a.counters["requests_timeout"] == 1
        with pytest.raises(RemoteError) as remote:  # the slow one still occupies b's only slot
            await a.request(b.node_id, "sync", b"more")
        assert remote.value.code == "busy"
        release.set()
        await eventually(lambda: a.counters["responses_unmatched"] == 1, "the late answer")
        assert await a.request(b.node_id, "sync", b"again") == b"blocks:again for " + a.node_id[:4].encode()

        with pytest.raises(PeerUnavailable) as unavailable:
            await a.request(PrivateKey.generate().address, "sync", b"")
        assert unavailable.value.code == "not_connected"
        with pytest.raises(PeerUnavailable) as unavailable:
            await a.request(b.node_id, "sync", b"x" * (a.config.max_frame_bytes + 1))
        assert unavailable.value.code == "too_large"

        # A connection that goes away fails its outstanding requests at once.
        release.clear()
        pending = asyncio.ensure_future(a.request(b.node_id, "sync", b"slow", timeout_s=30))
        await eventually(lambda: b.peer_status()[a.node_id]["requests_serving"] == 1, "the request to arrive")
        await b.stop()
        with pytest.raises(PeerUnavailable) as unavailable:
            await pending
        assert unavailable.value.code == "disconnected"


async def test_a_restarted_peer_is_redialed_with_backoff_on_the_same_port() -> None:
    async with cluster(2) as c:
        a, b = c.nodes
        a.add_peer(b.node_id, b.url)
        await eventually(c.fully_connected, "a connection")
        port = b.port
        await b.stop()
        await eventually(lambda: a.connected_peers() == [], "a to notice")
        # Connection refused, again and again, at growing intervals: it keeps trying.
        await eventually(lambda: a.counters["dial_failed"] >= 3, "a few failed redials")
        status = a.peer_status()[b.node_id]
        assert status["dial_attempts"] >= 4 and "Connect" in status["last_error"]

        restarted = await c.start_node(1, fast_config(listen_port=port))
        assert restarted.port == port
        await eventually(lambda: a.connected_peers() == [b.node_id], "a to redial the restarted peer")
        assert a.send(b.node_id, "consensus", b"welcome back")
        await eventually(lambda: c.inboxes[2].has(a.node_id, "consensus", b"welcome back"), "delivery")


async def test_a_stalled_peer_fills_only_its_own_queue() -> None:
    # Plain ws://: the stalled peer below is a hand-driven handshake.
    config = fast_config(send_queue_max=8, max_frame_bytes=1 << 20, send_queue_max_bytes=8 << 20,
                         send_timeout_s=60, ping_interval_s=60, tls=False)
    stalled_key = PrivateKey.generate()
    async with AsyncExitStack() as stack:
        keys = [PrivateKey.generate(), PrivateKey.generate()]
        c = Cluster(stack, keys, config)
        c.validators.append(stalled_key.address)
        a = await c.start_node(0)
        b = await c.start_node(1, peers={a.node_id: a.url})
        await eventually(lambda: a.connected_peers() == [b.node_id], "a healthy link")

        # A validator that completes the handshake and then never reads: its TCP window fills,
        # then a's queue for it fills, then a drops what it cannot queue.
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        ws = await session.ws_connect(a.url)
        stack.push_async_callback(ws.close)
        await handshake.dial(ws, handshake.Identity(stalled_key, CHAIN, frozenset(c.validators)), a.node_id)
        await eventually(lambda: stalled_key.address in a.connected_peers(), "the stalled peer's link")

        chunk = b"s" * (256 * 1024)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while a.counters["queue_full"] == 0:
            assert loop.time() < deadline, "the queue never filled"
            started = loop.time()
            a.send(stalled_key.address, "sync", chunk)
            assert loop.time() - started < 1.0  # send never blocks
            await asyncio.sleep(0.001)
        status = a.peer_status()[stalled_key.address]
        assert status["queue_frames"] == 8 and status["dropped_queue_full"] >= 1
        assert a.send(stalled_key.address, "sync", chunk) is False
        with pytest.raises(PeerUnavailable) as unavailable:
            await a.request(stalled_key.address, "sync", b"")
        assert unavailable.value.code == "queue_full"

        # Meanwhile the healthy peer is served both ways.
        assert a.send(b.node_id, "consensus", b"still here") and b.send(a.node_id, "consensus", b"me too")
        await eventually(lambda: c.inboxes[1].has(a.node_id, "consensus", b"still here"), "a -> b")
        await eventually(lambda: c.inboxes[0].has(b.node_id, "consensus", b"me too"), "b -> a")


async def test_a_configured_observer_gets_gossip_but_not_the_engines_validator_broadcasts() -> None:
    async with AsyncExitStack() as stack:
        validator, observer = PrivateKey.generate(), PrivateKey.generate()
        seen_by_observer = Inbox()
        v = P2PNode(fast_config(), validator, CHAIN, [validator.address], {}, Inbox(),
                    observers=[observer.address])
        await v.start()
        stack.push_async_callback(v.stop)
        o = P2PNode(fast_config(), observer, CHAIN, [validator.address], {validator.address: v.url},
                    seen_by_observer)
        await o.start()
        stack.push_async_callback(o.stop)
        await eventually(lambda: v.connected_peers() == [observer.address], "the observer's link")
        assert v.peer_status()[observer.address]["role"] == "observer"

        assert TopicChannel(v, "consensus").broadcast(b"vote") == 0  # "every other validator"
        assert v.broadcast("status", b"height 7") == 1
        await eventually(lambda: seen_by_observer.has(validator.address, "status", b"height 7"), "gossip")
        # Same connection, in order: had the vote been sent, it would have arrived before the status.
        assert not seen_by_observer.has(validator.address, "consensus", b"vote")
