"""Open observer admission on real P2PNodes: any node key of the chain may connect as an observer
when `open_observers` is set (refused when not), at most `max_observer_links` at once, and a
validator-set change turns an observer's link into a validator's (consensus broadcasts reach it)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from ledger.keys import PrivateKey
from p2p import P2PNode, TopicChannel
from tests.integration.test_p2p_cluster import CHAIN, Inbox, eventually, fast_config

pytestmark = pytest.mark.timeout(60)


async def test_unlisted_observers_connect_up_to_the_limit_and_a_new_validator_gets_consensus_traffic() -> None:
    async with AsyncExitStack() as stack:
        validator = PrivateKey.generate()
        v = P2PNode(fast_config(open_observers=True, max_observer_links=2), validator, CHAIN,
                    [validator.address], {}, Inbox())
        await v.start()
        stack.push_async_callback(v.stop)
        observers, inboxes = [PrivateKey.generate() for _ in range(3)], [Inbox() for _ in range(3)]
        for key, inbox in zip(observers[:2], inboxes, strict=False):
            o = P2PNode(fast_config(), key, CHAIN, [validator.address], {validator.address: v.url}, inbox)
            await o.start()
            stack.push_async_callback(o.stop)
        await eventually(lambda: len(v.connected_peers()) == 2, "two observer links")
        third = P2PNode(fast_config(), observers[2], CHAIN, [validator.address], {validator.address: v.url},
                        inboxes[2])
        await third.start()
        stack.push_async_callback(third.stop)
        await eventually(lambda: v.counters["connections_refused_observer_limit"] >= 1, "the third refused")
        assert sorted(v.connected_peers()) == sorted(o.address for o in observers[:2])

        # observer0 becomes a validator: it stops counting as an observer and gets consensus traffic.
        v.set_validators([validator.address, observers[0].address])
        assert TopicChannel(v, "consensus").broadcast(b"vote") == 1
        await eventually(lambda: inboxes[0].has(validator.address, "consensus", b"vote"), "the vote")
        await eventually(lambda: observers[2].address in v.connected_peers(), "the third's link, now room")


async def test_without_open_observers_an_unlisted_node_is_refused() -> None:
    async with AsyncExitStack() as stack:
        validator, stranger = PrivateKey.generate(), PrivateKey.generate()
        v = P2PNode(fast_config(), validator, CHAIN, [validator.address], {}, Inbox())
        await v.start()
        stack.push_async_callback(v.stop)
        s = P2PNode(fast_config(), stranger, CHAIN, [validator.address], {validator.address: v.url}, Inbox())
        await s.start()
        stack.push_async_callback(s.stop)
        await eventually(lambda: v.counters["handshake_failed_not_allowed"] >= 1, "the refusal")
        assert v.connected_peers() == []
