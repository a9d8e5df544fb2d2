"""A stranger flooding the p2p ports must never lock the validators out (CometBFT CVE-2020-5303 class).

The attack: many connections that upgrade to WebSocket and then never send a hello, each re-opened
as soon as the listener drops or refuses it, against every validator's port at once. Meanwhile a
validator restarts; it must rejoin its peers within seconds, and the chain must go on committing
with it. Attacker and validators all connect from 127.0.0.1 here, so per-address limits alone
would shut the validators out too: what lets them in is the slots reserved for known node ids.

Every node and every attacking task is stopped in a finally (exit stacks, task groups); the flood
lasts only while a test needs it (bounded by the test's own deadlines).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli import testnet as tn
from ledger import keys
from ledger.keys import PrivateKey
from node.node import Node
from p2p import HandshakeError, P2PConfig, P2PNode, handshake
from tests.helpers.nodes import pay
from tests.helpers.ports import free_base_port

CHAIN = "p2p-test"
SILENT_PER_TARGET = 10  # more than the old node-wide pool of 8 pending handshakes
REJOIN_WITHIN_S = 5.0
pytestmark = pytest.mark.timeout(90)


async def eventually(predicate: Callable[[], Any], what: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class FloodStats:
    upgraded: int = 0  # connections the listener upgraded (and that then said nothing)
    refused: int = 0  # attempts the listener refused or dropped before the upgrade


async def _hold_silent(session: aiohttp.ClientSession, url: str, stats: FloodStats) -> None:
    """One attacking slot: upgrade, say nothing, and reconnect the moment the listener lets go."""
    while True:
        try:
            ws = await session.ws_connect(url, autoping=True, ssl=False)
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.02)  # the node is down: be the first one in when it comes back
            continue
        except (aiohttp.ClientError, OSError):
            stats.refused += 1
            await asyncio.sleep(0.1)  # refused at once; retrying faster would only load the shared CPU
            continue
        stats.upgraded += 1
        async with ws:
            await ws.receive()  # returns when the listener closes the connection


@asynccontextmanager
async def silent_flood(urls: Sequence[str], per_target: int = SILENT_PER_TARGET) -> AsyncIterator[FloodStats]:
    stats = FloodStats()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(_hold_silent(session, url, stats)) for url in urls for _ in range(per_target)]
        try:
            yield stats
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def refusals(node: P2PNode) -> int:
    return sum(node.counters[f"handshake_failed_{code}"]
               for code in ("busy", "busy_source", "rate_limited", "timeout"))


async def test_a_validator_restarted_during_a_silent_flood_rejoins_its_peers_at_once() -> None:
    """Transport level: four P2PNodes in a full mesh, every port flooded, one of them restarted."""
    # Default handshake limits and reconnect backoff (bar a lower ceiling): what a deployment runs.
    config = P2PConfig(listen_port=0, reconnect_backoff_max_s=2.0, close_timeout_s=0.5)
    node_keys = [PrivateKey.generate() for _ in range(4)]
    validators = [k.address for k in node_keys]
    async with AsyncExitStack() as stack:
        nodes: list[P2PNode] = []
        for i, key in enumerate(node_keys):
            node = P2PNode(config, key, CHAIN, validators, {}, lambda p, t, d: None, rng=random.Random(i))
            await node.start()
            stack.push_async_callback(node.stop)
            nodes.append(node)
        for a in nodes:
            for b in nodes:
                a.add_peer(b.node_id, b.url)
        await eventually(lambda: all(len(n.connected_peers()) == 3 for n in nodes), "a full mesh", 10)

        async with silent_flood([n.url for n in nodes]) as flood:
            # Let the flood take every slot it can before the validator goes away.
            await eventually(lambda: flood.upgraded >= 4 * 2, "the flood to hold connections", 10)
            await asyncio.sleep(1.0)
            old = nodes[3]
            port = old.port
            await old.stop()
            await eventually(lambda: all(old.node_id not in n.connected_peers() for n in nodes[:3]),
                             "the peers to notice the restart", 10)
            await asyncio.sleep(1.0)  # a restart takes a moment, which the flood uses to be ready

            restarted = P2PNode(config.model_copy(update={"listen_port": port}), node_keys[3], CHAIN,
                                validators, {n.node_id: n.url for n in nodes[:3]}, lambda p, t, d: None,
                                rng=random.Random(7))
            await restarted.start()
            stack.push_async_callback(restarted.stop)
            await eventually(lambda: len(restarted.connected_peers()) == 3, "the restarted validator to rejoin",
                             REJOIN_WITHIN_S)
            await eventually(lambda: all(restarted.node_id in n.connected_peers() for n in nodes[:3]),
                             "every peer to see it back", REJOIN_WITHIN_S)
            # The flood was real and was turned away, not merely absent.
            assert flood.upgraded > 0 and flood.refused > 0
            assert sum(refusals(n) for n in nodes[:3]) > 0
            assert restarted.counters["handshake_failed_busy"] == 0  # the validators never competed with it
            for n in nodes[:3]:
                assert n.counters["handshake_failed_busy_source"] + n.counters["handshake_failed_rate_limited"] > 0


FAST = {"tick_ms": 10, "status_interval_s": 0.1, "sync_lag_grace_s": 0.3}


async def test_a_restarted_validator_rejoins_and_the_chain_commits_with_it_during_a_flood(tmp_path: Path) -> None:
    """Node level (PBFT, four validators): node3 restarts under the flood, rejoins within seconds,
    and then is needed for the quorum: with node0 stopped, nothing commits unless node3 takes part."""
    net = tn.make_testnet(tmp_path / "net", validators=4, accounts=2, base_port=free_base_port())
    alice, bob = (keys.PrivateKey.load(p) for p in net.account_files)
    async with AsyncExitStack() as stack:

        async def start(k: int) -> Node:
            node = Node.open(net.node_homes[k], dict(FAST), environ={})
            stack.push_async_callback(node.stop)
            await node.start()
            return node

        def links(node: Node) -> int:
            return 0 if node.network is None else len(node.network.connected_peers())

        nodes = [await start(k) for k in range(4)]
        await eventually(lambda: all(links(n) == 3 for n in nodes), "a full mesh", 20)
        urls = []
        for n in nodes:
            assert n.network is not None and n.network.url is not None
            urls.append(n.network.url)

        async with silent_flood(urls) as flood:
            await eventually(lambda: flood.upgraded >= 4 * 2, "the flood to hold connections", 10)
            await asyncio.sleep(1.0)
            await nodes[3].stop()
            await eventually(lambda: all(links(n) == 2 for n in nodes[:3]), "the peers to notice", 15)
            await asyncio.sleep(1.0)
            restarted = await start(3)
            await eventually(lambda: links(restarted) == 3, "the restarted validator to rejoin", REJOIN_WITHIN_S)

            await nodes[0].stop()
            tx = pay(alice, 0, bob)
            assert [o.code for o in await nodes[1].service.submit([tx.to_json()])] == ["accepted"]
            status = await restarted.service.wait_committed(tx.hash, 30)
            assert status is not None and status.status == "committed"
            assert flood.refused > 0


# --- the pieces, one at a time, against one listener ------------------------------------------------


@asynccontextmanager
async def listener(**overrides: Any) -> AsyncIterator[tuple[P2PNode, list[PrivateKey], aiohttp.ClientSession]]:
    """Node `a` listening (keys[0]); keys[1] and keys[2] are validators that have not connected."""
    settings: dict[str, Any] = {"listen_port": 0, "close_timeout_s": 0.5, "reconnect_backoff_min_s": 0.05,
                                "reconnect_backoff_max_s": 0.3}
    settings.update(overrides)
    node_keys = [PrivateKey.generate() for _ in range(3)]
    async with AsyncExitStack() as stack:
        a = P2PNode(P2PConfig(**settings), node_keys[0], CHAIN, [k.address for k in node_keys], {},
                    lambda p, t, d: None, rng=random.Random(0))
        await a.start()
        stack.push_async_callback(a.stop)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield a, node_keys, session


async def start_peer(stack: AsyncExitStack, key: PrivateKey, a: P2PNode, validators: list[str]) -> P2PNode:
    peer = P2PNode(P2PConfig(listen_port=0, reconnect_backoff_min_s=0.05, reconnect_backoff_max_s=0.3,
                             tls=a.config.tls),
                   key, CHAIN, validators, {a.node_id: a.url}, lambda p, t, d: None, rng=random.Random(1))
    await peer.start()
    stack.push_async_callback(peer.stop)
    return peer


async def closed(ws: aiohttp.ClientWebSocketResponse, within_s: float) -> int | None:
    async with asyncio.timeout(within_s):
        while not ws.closed:
            await ws.receive()
    return ws.close_code


async def test_the_hello_must_come_within_the_short_pre_auth_deadline() -> None:
    async with listener(hello_timeout_s=0.3, handshake_timeout_s=30) as (a, node_keys, session):
        silent = await session.ws_connect(a.url, headers={handshake.NODE_ID_HEADER: node_keys[1].address}, ssl=False)
        assert await closed(silent, within_s=5) == handshake.CLOSE_MALFORMED  # not after 30 s
        assert a.counters["handshake_failed_timeout"] == 1


async def test_a_claimed_node_id_must_be_known_and_match_the_hello() -> None:
    async with listener() as (a, node_keys, session):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(a.url, headers={handshake.NODE_ID_HEADER: PrivateKey.generate().address},
                                     ssl=False)
        assert refused.value.status == 403 and a.counters["handshake_failed_not_allowed"] == 1

        # Claims one validator, then says hello (and proves the key) as another: refused.
        ws = await session.ws_connect(a.url, headers={handshake.NODE_ID_HEADER: node_keys[1].address}, ssl=False)
        ident = handshake.Identity(node_keys[2], CHAIN, frozenset(k.address for k in node_keys))
        with pytest.raises(HandshakeError):
            await handshake.dial(ws, ident, a.node_id)
        assert ws.close_code == handshake.CLOSE_NOT_ALLOWED
        assert a.counters["handshake_failed_wrong_claim"] == 1 and a.connected_peers() == []


async def test_squatters_on_a_validators_id_are_evicted_by_the_validator() -> None:
    """Silent connections claiming b's id hold b's slots only until b itself dials."""
    async with listener(hello_timeout_s=30, handshake_timeout_s=30) as (a, node_keys, session):
        claim = {handshake.NODE_ID_HEADER: node_keys[1].address}
        squatters = [await session.ws_connect(a.url, headers=claim, ssl=False) for _ in range(2)]
        async with AsyncExitStack() as stack:
            b = await start_peer(stack, node_keys[1], a, [k.address for k in node_keys])
            await eventually(lambda: a.connected_peers() == [b.node_id], "b to get in", REJOIN_WITHIN_S)
            assert a.counters["handshake_failed_evicted"] >= 1
            assert await closed(squatters[0], within_s=5) == handshake.CLOSE_DUPLICATE


@pytest.mark.parametrize("tls", [True, False], ids=["wss", "ws"])
async def test_idle_tcp_connections_beyond_the_limit_are_closed_oldest_first(tls: bool) -> None:
    """Raw TCP connections that never send their upgrade request, far more than the idle limit, held
    open (the pre-auth deadline is long here, so only the limit can close them): the node keeps at
    most the limit of them, not one file descriptor per attacker socket, and a validator gets in."""
    held = 400  # well above the limit, and within a default file-descriptor limit of 1024
    # On a wss:// listener these connections never even start their TLS handshake.
    async with listener(hello_timeout_s=60, handshake_timeout_s=60, max_idle_connections=32,
                        tls=tls) as (a, node_keys, _):
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(held):
                conns.append(await asyncio.open_connection("127.0.0.1", a.port))
            await eventually(lambda: a.counters["connections_evicted_idle"] >= held - 32,
                             "the oldest idle connections to be closed", 10)
            async with asyncio.timeout(5):
                assert await conns[0][0].read() == b""  # the oldest: closed by the listener
            assert not conns[-1][0].at_eof()  # the newest: still open
            async with AsyncExitStack() as stack:
                b = await start_peer(stack, node_keys[1], a, [k.address for k in node_keys])
                await eventually(lambda: a.connected_peers() == [b.node_id], "b to get in", REJOIN_WITHIN_S)
        finally:
            for _, writer in conns:
                writer.close()
