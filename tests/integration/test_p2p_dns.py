"""Peers by host name: resolved again on every attempt, and a name that does not resolve yet is a
retry (logged once), never a crash. The names live in a resolver the test controls (no system DNS
is touched); the addresses are loopback aliases (127.0.0.1, 127.0.0.2), which Linux routes without
any set-up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from ledger.keys import PrivateKey
from p2p import P2PConfig, P2PNode

CHAIN = "p2p-dns"
NAME = "validator-b.consortium.test"
pytestmark = pytest.mark.timeout(60)


class Names(AbstractResolver):
    """A DNS zone in a dict: NAME -> address, changed by the test; unknown names fail like DNS."""

    def __init__(self) -> None:
        self.zone: dict[str, str] = {}
        self.lookups = 0

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups += 1
        if host not in self.zone:
            raise OSError(socket.EAI_NONAME, f"{host} does not resolve")
        return [ResolveResult(hostname=host, host=self.zone[host], port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def config(host: str = "127.0.0.1", port: int = 0) -> P2PConfig:
    return P2PConfig(listen_host=host, listen_port=port, reconnect_backoff_min_s=0.05,
                     reconnect_backoff_max_s=0.3, close_timeout_s=0.5)


async def test_a_peer_name_is_resolved_on_every_attempt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p2p.node")
    keys = [PrivateKey.generate() for _ in range(2)]
    validators = [k.address for k in keys]
    names = Names()
    b1 = P2PNode(config("127.0.0.1"), keys[1], CHAIN, validators, {}, lambda p, t, d: None)
    await b1.start()
    port = b1.port
    a = P2PNode(config(), keys[0], CHAIN, validators, {keys[1].address: f"wss://{NAME}:{port}"},
                lambda p, t, d: None, rng=random.Random(0), resolver=names)
    b2: P2PNode | None = None
    await a.start()  # the name does not resolve yet: start-up goes on regardless
    try:
        await eventually(lambda: a.counters["dial_failed_dns"] >= 3, "several failed lookups")
        unresolved = [r for r in caplog.records if "cannot resolve" in r.getMessage()]
        assert len(unresolved) == 1, "one line per streak of failures, not one per attempt"
        assert a.connected_peers() == []

        names.zone[NAME] = "127.0.0.1"
        await eventually(lambda: a.connected_peers() == [b1.node_id], "the link once the name resolves")

        # The validator moves: same key and port, another address; the name follows it.
        await b1.stop()
        b2 = P2PNode(config("127.0.0.2", port), keys[1], CHAIN, validators, {}, lambda p, t, d: None)
        await b2.start()
        names.zone[NAME] = "127.0.0.2"
        before = names.lookups
        await eventually(lambda: a.connected_peers() == [b2.node_id] and b2.connected_peers() == [a.node_id],
                         "the link to the validator at its new address", timeout_s=5.0)  # < a DNS cache's 10 s
        assert names.lookups > before
    finally:
        await a.stop()
        await b1.stop()
        if b2 is not None:
            await b2.stop()
