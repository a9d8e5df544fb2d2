"""The node's side of the validator network: one `p2p.P2PNode` and what each topic means to the node.

Topics:

    consensus   engine messages, both ways (`p2p.TopicChannel` is the runtime's transport)
    txs         batches of transactions this node admitted from clients (`node.net.gossip.TxBatcher`);
                received ones go to the node's gossip intake and are never passed on
    status      this node's head, broadcast every `status_interval_s`, and sent to the observers
                as soon as a block is committed (`announce_commit`), so that they fetch it at once
                (`node.net.sync`)
    sync        request/response: blocks with their certificates, for peers that are behind

`PeerNetwork` owns its tasks (status announcements, the block syncer, the gossip batcher) and the
P2PNode; it starts its tasks through the `spawn` it is given (the node's, which halts the node when
one of them fails), and `stop()` cancels and waits for all of them, then closes every connection,
even if one of them had died. It exposes the transport's and the syncer's counters as Prometheus
metrics (`ledgerd_p2p_events_total{event}`, `ledgerd_sync_events_total{event}`) and keeps the
`ledgerd_peers_connected` gauge current.

Built by `node.node.Node` (the composition root) unless the chain is one validator for ever (a
single validator and no committee to change the set). Peers that are not validators in force are
observers: their consensus messages are dropped (counted), the transactions they forward are
verified like a client's, and they get no consensus traffic; validators accept up to
`p2p_max_observer_links` of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ledger import keys
from ledger.block import Block
from ledger.genesis import Genesis
from node.config import ConfigError, NodeConfig
from node.metrics import NodeMetrics
from node.net.gossip import TxBatcher
from node.net.sync import (
    STATUS_TOPIC,
    SYNC_TOPIC,
    BlockSync,
    RefusedRequest,
    SyncSettings,
    VerifySignatures,
    encode_status,
)
from p2p import P2PConfig, P2PNode, RequestRefused, TopicChannel
from storage import Store

CONSENSUS_TOPIC = "consensus"
TXS_TOPIC = "txs"


class PeerNetwork:
    """P2P links to every other validator, gossip, peer heads and block sync for one node."""

    def __init__(
        self, *, config: NodeConfig, key: keys.PrivateKey, genesis: Genesis, store: Store, metrics: NodeMetrics,
        validators: Sequence[str], known_validators: frozenset[str],
        validators_at: Callable[[int], Sequence[str]] | None = None, known_through: Callable[[], int] | None = None,
        logger: logging.Logger, deliver: Callable[[str, bytes], bool], receive_txs: Callable[[str, bytes], bool],
        apply_synced: Callable[[Sequence[tuple[Block, dict[str, Any]]]], Any],
        run_blocking: Callable[..., Any], sync_hint: Callable[[], int | None],
        verify_signatures: VerifySignatures | None = None,
        p2p_config: P2PConfig | None = None,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]] | None = None,
    ) -> None:
        strangers = sorted(peer for peer in config.peers if peer not in known_validators)
        if strangers:
            raise ConfigError(f"peer {strangers[0][:16]}… in [peers] is not a validator of this chain")
        validators = tuple(validators)
        self._config = config
        self._store = store
        self._metrics = metrics
        self._log = logger
        self._deliver = deliver
        self._receive_txs = receive_txs
        self._spawn = spawn or (lambda coro, name: asyncio.create_task(coro, name=f"{name}-{key.address[:8]}"))
        settings = p2p_config or P2PConfig(listen_host=config.p2p_host, listen_port=config.p2p_port,
                                           tls=not config.p2p_allow_plaintext,
                                           open_observers=config.p2p_open_observers,
                                           max_observer_links=config.p2p_max_observer_links)
        try:
            self.p2p = P2PNode(settings, key, genesis.chain_id, validators, config.peers, self._on_message,
                               observers=[p for p in config.peers if p not in validators])
        except ValueError as exc:
            raise ConfigError(f"invalid p2p settings: {exc}") from None
        self.consensus = TopicChannel(self.p2p, CONSENSUS_TOPIC)
        self._me = key.address
        self._validators = frozenset(validators) - {key.address}
        self.gossip = TxBatcher(
            TopicChannel(self.p2p, TXS_TOPIC).broadcast, max_batch_txs=config.max_batch_txs,
            # Peers refuse batches over gossip_max_batch_bytes unread; the frame limit binds too.
            max_batch_bytes=min(self.p2p.max_payload_bytes, config.gossip_max_batch_bytes),
            max_pending_txs=config.gossip_max_pending_txs,
            flush_s=config.gossip_flush_ms / 1000,
            on_overflow=lambda n: metrics.dropped.labels("tx_gossip_overflow").inc(n),
            has_peers=lambda: self.connected_validators() > 0,
        )
        self.sync = BlockSync(
            store=store, kind=genesis.consensus, validators=validators, request=self._request,
            apply=apply_synced, run_blocking=run_blocking, sync_hint=sync_hint,
            max_payload_bytes=lambda: self.p2p.max_payload_bytes,
            settings=SyncSettings(
                batch_blocks=config.sync_batch_blocks, request_timeout_s=config.sync_request_timeout_s,
                lag_grace_s=config.sync_lag_grace_s, penalty_s=config.sync_penalty_s,
                status_interval_s=config.status_interval_s),
            on_syncing=lambda on: metrics.syncing.set(1 if on else 0), logger=logger,
            validators_at=validators_at, known_through=known_through, verify_signatures=verify_signatures,
            me=key.address,
        )
        self._announce_queued = False
        self.p2p.register_handler(SYNC_TOPIC, self._serve_sync)
        self._collector = _NetworkCollector(self)
        metrics.registry.register(self._collector)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the p2p listener (ConfigError if it cannot), start dialing and the owned tasks."""
        try:
            await self.p2p.start()
        except OSError as exc:
            where = f"{self._config.p2p_host}:{self._config.p2p_port}"
            raise ConfigError(f"cannot listen for peers on {where}: {exc.strerror or exc}") from None
        self._started = True
        self._log.info("p2p listening on %s", self.p2p.url, extra={"fields": {"p2p_url": self.p2p.url}})
        self._tasks = [
            self._spawn(self._announce(), "p2p-status"),
            self._spawn(self.sync.run(), "block-sync"),
        ]
        if self._config.gossip_flush_ms > 0:
            self._tasks.append(self._spawn(self.gossip.run(), "tx-gossip-out"))

    async def stop(self) -> None:
        """Stop the owned tasks, then close every connection and the listener."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A task that died is the spawner's to report; its error must not stop the closing here.
            await asyncio.wait(self._tasks)
        self._tasks = []
        if self._started:
            self._started = False
            await self.p2p.stop()
        self._metrics.peers.set(0)
        self._metrics.syncing.set(0)

    # --- what the node asks ---------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        return self.p2p.url if self._started else None

    def connected_peers(self) -> list[str]:
        return self.p2p.connected_peers() if self._started else []

    def set_validators(self, validators: Sequence[str]) -> None:
        """The validator set in force changed (the node's committed state says so)."""
        if frozenset(validators) - {self._me} != self._validators:
            self._validators = frozenset(validators) - {self._me}
            self.p2p.set_validators(validators)
            self.sync.set_validators(validators)

    def announce_commit(self) -> None:
        """A block was committed: tell the connected observers this node's new head, once per turn
        of the event loop however many blocks were committed in it (block sync commits runs)."""
        if self._started and not self._announce_queued:
            self._announce_queued = True
            asyncio.get_running_loop().call_soon(self._announce_to_observers)

    def _announce_to_observers(self) -> None:
        self._announce_queued = False
        if not self._started:
            return
        tip = self._store.tip
        status = encode_status(tip.height, tip.block_hash)
        for peer in self.connected_peers():
            if peer not in self._validators:
                self.p2p.send(peer, STATUS_TOPIC, status)

    def is_validator(self, peer: str) -> bool:
        return peer in self._validators

    def connected_validators(self) -> int:
        return sum(1 for peer in self.connected_peers() if peer in self._validators)

    # --- topics ---------------------------------------------------------------------------------

    def _on_message(self, peer: str, topic: str, payload: bytes) -> None:
        if topic == CONSENSUS_TOPIC:
            if peer in self._validators:
                self._deliver(peer, payload)
            else:
                self._metrics.dropped.labels("consensus_from_observer").inc()
        elif topic == TXS_TOPIC:
            self._receive_txs(peer, payload)
        elif topic == STATUS_TOPIC:
            self.sync.on_status(peer, payload)
        else:
            self._metrics.dropped.labels("unknown_topic").inc()

    async def _serve_sync(self, peer: str, payload: bytes) -> bytes:
        try:
            return self.sync.serve(payload)
        except RefusedRequest as exc:
            raise RequestRefused(exc.code, exc.message) from None

    async def _request(self, peer: str, topic: str, payload: bytes, timeout_s: float) -> bytes:
        return await self.p2p.request(peer, topic, payload, timeout_s=timeout_s)

    async def _announce(self) -> None:
        """Tell every peer this node's head, and keep the peers gauge current."""
        while True:
            tip = self._store.tip
            self.p2p.broadcast(STATUS_TOPIC, encode_status(tip.height, tip.block_hash))
            self._metrics.peers.set(self.connected_validators())
            await asyncio.sleep(self._config.status_interval_s)


class _NetworkCollector(Collector):
    """The transport's and the syncer's counters, read at scrape time."""

    def __init__(self, network: PeerNetwork) -> None:
        self._network = network

    def collect(self) -> Iterator[CounterMetricFamily]:
        p2p = CounterMetricFamily("ledgerd_p2p_events", "P2P transport events (connections, frames, "
                                  "requests, drops), by event", labels=["event"])
        for name, value in sorted(self._network.p2p.counters.items()):
            p2p.add_metric([name], value)
        yield p2p
        sync = CounterMetricFamily("ledgerd_sync_events", "Block sync events, by event", labels=["event"])
        for name, value in self._network.sync.counters.items():
            sync.add_metric([name], value)
        yield sync

