"""`TxIntake`: how transactions come in. Client submissions, peers' gossip, and re-gossip.

Submissions are decoded, their signatures checked off the loop (`SignatureChecks`), admitted
through the core (`Runtime.submit`, answered with accepted or a refusal code per transaction) and
what was accepted is gossiped. Gossip from peers is queued (bounded) and admitted in rounds by an
owned task; transactions received by gossip are never gossiped again, and a peer's batch is
outside input: refused batches and items are dropped and counted by reason
(`ledgerd_dropped_messages_total{reason}`), never raised into the intake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ledger.errors import Rejected
from ledger.tx import DecodeMemo, Transaction, decode_tx
from node.config import NodeConfig
from node.core.mempool import Mempool
from node.metrics import NodeMetrics
from node.net.gossip import TxBatch, TxBatcher, TxBatchLimits, read_tx_batch
from node.runtime import Runtime
from node.service import SubmitOutcome
from node.signatures import SignatureChecks

GOSSIP_BATCHES_PER_ROUND = 64  # queued gossip batches admitted together in one round
GOSSIP_FAILED = "tx_gossip_failed"  # drop reason: handling a peer's batch raised unexpectedly


class TxGossip(Protocol):
    """Where accepted transactions are gossiped (a `p2p.TopicChannel` for the "txs" topic)."""

    def broadcast(self, data: bytes) -> None | int: ...


class TxIntake:
    def __init__(self, config: NodeConfig, mempool: Mempool, runtime: Runtime, checks: SignatureChecks,
                 metrics: NodeMetrics, logger: logging.Logger, *, trust_peers: bool,
                 refusal: Callable[[], str | None], decode_memo: DecodeMemo | None = None) -> None:
        """`trust_peers`: the engine assumes crash faults only, so validators' gossip is not verified
        again (an observer's always is: set `is_validator`). `refusal()`: None while the node runs,
        else why nothing is admitted."""
        self._config = config
        self._mempool = mempool
        self._runtime = runtime
        self._checks = checks
        self._metrics = metrics
        self._log = logger
        self._trust_peers = trust_peers
        self.is_validator: Callable[[str], bool] = lambda peer: True
        # A check of the node's own on a client's transaction before admission (None: fine), for
        # rules that depend on what this node sees, not on the chain's state.
        self.precheck: Callable[[Transaction], Rejected | None] = lambda tx: None
        self._refusal = refusal
        self._decode_memo = decode_memo
        self.tx_out: TxBatcher | None = None  # where accepted submissions are gossiped
        self._gossip_in: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(config.gossip_inbox_batches)
        self._gossip_limits = TxBatchLimits(max_txs=config.max_batch_txs, max_bytes=config.gossip_max_batch_bytes)

    def gossip_to(self, tx_gossip: TxGossip | None) -> None:
        """Gossip accepted submissions through `tx_gossip` (batched), or nowhere."""
        config = self._config
        self.tx_out = None if tx_gossip is None else TxBatcher(
            tx_gossip.broadcast, max_batch_txs=config.max_batch_txs, max_batch_bytes=config.gossip_max_batch_bytes,
            max_pending_txs=config.gossip_max_pending_txs, flush_s=0,
            on_overflow=lambda n: self._metrics.dropped.labels("tx_gossip_overflow").inc(n))

    async def submit(self, txs: list[Any]) -> list[SubmitOutcome]:
        """Decode, verify (off the loop), admit through the core, gossip what was accepted."""
        outcomes: list[SubmitOutcome | None] = [None] * len(txs)
        decoded: list[Transaction] = []
        positions: list[int] = []
        for i, raw in enumerate(txs):
            if isinstance(raw, Transaction):
                tx = raw
            else:
                try:
                    tx = decode_tx(raw)
                except Rejected as exc:
                    outcomes[i] = SubmitOutcome(None, exc.code, exc.message)
                    continue
            refused = self.precheck(tx)
            if refused is not None:
                outcomes[i] = SubmitOutcome(tx.hash, refused.code, refused.message)
                continue
            decoded.append(tx)
            positions.append(i)
        if decoded:
            admitted = await self._admit(decoded)
            to_gossip: dict[str, Transaction] = {}
            for i, tx, outcome in zip(positions, decoded, admitted, strict=True):
                outcomes[i] = outcome
                # A client resubmitting a transaction that is still pending here sends it out
                # again: a peer that restarted (or missed it) gets it, and the client's retries,
                # not a timer, bound how often that happens.
                if outcome.accepted or (outcome.code == "duplicate" and tx.hash in self._mempool):
                    to_gossip.setdefault(tx.hash, tx)
            if to_gossip and self.tx_out is not None:
                self.tx_out.add(list(to_gossip.values()))
        final = [o for o in outcomes if o is not None]
        for outcome in final:
            if not outcome.accepted:
                self._metrics.txs_rejected.labels(outcome.code).inc()
        return final

    def receive_txs(self, peer: str, data: bytes) -> bool:
        """Queue transactions gossiped by `peer` (a JSON array) for admission; returns at once.

        False (and counted) when the node is not running or its gossip intake is full: gossip is
        best effort, and a peer flooding us must not grow our memory.
        """
        running = self._refusal() is None
        if not running or self._gossip_in.full():
            self._metrics.dropped.labels("tx_gossip_full" if running else "stopping").inc()
            return False
        self._gossip_in.put_nowait((peer, data))
        return True

    async def run_gossip_intake(self) -> None:
        """The owned task that admits gossiped transactions.

        Every batch already queued is taken together into one admission round (one verification
        fan-out, one trip through the core): taking them one by one, a burst from several peers
        outran the intake, the queue overflowed and a Raft leader lost transactions it then never
        proposed. What a peer sent cannot end this task: a refused batch or item is counted by
        reason, and anything unexpected while handling a round drops it, counted and logged.
        """
        while True:
            batches = [await self._gossip_in.get()]
            while not self._gossip_in.empty() and len(batches) < GOSSIP_BATCHES_PER_ROUND:
                batches.append(self._gossip_in.get_nowait())
            decoded: list[Transaction] = []
            unverified: list[Transaction] = []  # from observers: never trusted, whatever the engine
            for peer, data in batches:
                (decoded if self.is_validator(peer) else unverified).extend(await self._read_gossip(peer, data))
            if not decoded and not unverified:
                continue
            try:
                if decoded:
                    await self._admit(decoded, trusted=self._trust_peers)
                if unverified:
                    await self._admit(unverified)
            except Exception as exc:
                self._metrics.dropped.labels(GOSSIP_FAILED).inc(len(batches))
                self._log.error("dropped %d gossiped transactions: admitting them failed: %s: %.200s",
                                len(decoded), type(exc).__name__, exc)

    async def _read_gossip(self, peer: str, data: bytes) -> list[Transaction]:
        """The transactions in one batch from `peer`; decoding pauses to let the event loop run."""
        try:
            reader = read_tx_batch(data, self._gossip_limits, self._decode_memo)
            while True:
                try:
                    next(reader)
                except StopIteration as done:
                    batch: TxBatch = done.value
                    break
                await asyncio.sleep(0)
        except Exception as exc:
            self._metrics.dropped.labels(GOSSIP_FAILED).inc()
            self._log.error("dropped a tx gossip batch from peer %s: %s: %.200s", peer[:16], type(exc).__name__, exc)
            return []
        for reason in batch.dropped:
            self._metrics.dropped.labels(reason).inc()
        await asyncio.sleep(0)  # a round holds up to GOSSIP_BATCHES_PER_ROUND batches: others run between
        return batch.txs

    async def run_regossip(self) -> None:
        """The owned task that sends out again what has been pending here for a while.

        Gossip is best effort (a peer's intake may be full, a link may drop), and a transaction
        only this node holds would wait for this node to propose: under Raft, forever on a
        follower. Every `gossip_resend_after_s`, pending transactions at least that old and not
        sent that recently go out again (at most `max_batch_txs` per peer round, oldest first);
        a peer that has them answers `duplicate` at the cost of a dictionary lookup.
        """
        period = self._config.gossip_resend_after_s
        while True:
            await asyncio.sleep(period)
            if self.tx_out is None or self._refusal() is not None:
                continue
            stale = self._mempool.take_stale(period, self._config.max_batch_txs)
            if stale:
                self._metrics.txs_regossiped.inc(len(stale))
                self.tx_out.add(stale)

    async def _admit(self, txs: list[Transaction], trusted: bool = False) -> list[SubmitOutcome]:
        """`trusted`: gossiped by a validator under a crash-fault engine, which verified them."""
        reason = self._refusal()
        if reason is not None:
            return [SubmitOutcome(tx.hash, "shutting_down", reason) for tx in txs]
        verified: list[bool | None] | None = [True] * len(txs) if trusted else await self._checks.verify(txs)
        return await self._runtime.submit(txs, verified)
