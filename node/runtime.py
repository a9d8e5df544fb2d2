"""The runtime: the one loop that drives the consensus engine.

A single asyncio task consumes an inbox (peer messages, submissions, a stop request) and a tick
every `tick_ms`, feeds the engine one event at a time and executes the actions it returns strictly
in order:

    Persist        -> one synced storage batch, finished before any later action is executed
                      (so no message that depends on it can leave the node before it is durable)
    Send/Broadcast -> the transport (non-blocking; the p2p layer queues and may drop)
    BuildProposal  -> the executor builds a block; the answer goes back as ProposalBuilt
    Commit         -> one atomic storage batch, then the mempool, metrics and the commit listener

Block sync goes through the same loop: `apply_synced` queues blocks fetched from a peer (their
certificates and signatures already checked by the caller); each is re-executed on the committed
head like a proposal, stored like a Commit, and immediately followed by `ChainAdvanced(tip)` (with
the block's proposer, which the BFT proposer schedule reads), so the engine never works on a height
the store has already passed. One block per turn of the loop.

Block pacing: a proposal is built no sooner than `block_interval_ms` after the last commit, unless a
full block (`full_block_txs`) is already waiting. Under load this trades a few milliseconds of
latency for fewer, fuller blocks (each block costs every node consensus messages, signatures and
synced writes whatever it holds), and it gives gossip the time to reach the other validators
before the proposal does, so they verify those signatures in their worker processes rather than
inline while checking the proposal. An idle chain's first transaction is proposed at once.

Work that actions ask for (building a proposal, telling the engine that transactions are still
waiting after a commit) is queued behind what is already in the inbox, not done on the spot: the
loop yields between blocks, so a deep mempool cannot keep HTTP handlers or ticks waiting while the
chain drains it block after block. Nothing here awaits between taking an event and finishing its
actions, so HTTP handlers (which run on the same loop) always see a consistent node.

Errors: a failed durable write (`StorageError`), a committed block this node cannot execute, or an
exception from the engine is fatal: `run()` raises it and the node halts. Peer input never raises;
engines drop and count bad messages themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.api import (
    Broadcast,
    BuildProposal,
    ChainAdvanced,
    Commit,
    Engine,
    Event,
    Persist,
    ProposalBuilt,
    Received,
    Send,
    Tick,
    TxsAvailable,
)
from ledger.block import Block
from ledger.state import Receipt
from ledger.tx import Transaction
from node.executor import BlockExecutor
from node.mempool import Dropped, Mempool
from node.metrics import NodeMetrics
from node.service import SubmitOutcome
from storage import Store


def loop_time() -> float:
    return asyncio.get_running_loop().time()


class Transport(Protocol):
    """Where engine messages go. `p2p.TopicChannel` is one; calls must not block."""

    def send(self, peer: str, data: bytes) -> None | bool: ...

    def broadcast(self, data: bytes) -> None | int: ...


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """What the commit listener hears: the stored block, its certificate, receipts and drops."""

    block: Block
    certificate: dict[str, Any]
    receipts: tuple[Receipt, ...]
    dropped: tuple[Dropped, ...]


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What `Runtime.apply_synced` did with a batch: blocks stored, blocks the node already had, and
    the reason the first refused block was refused (the rest of the batch is then left alone)."""

    applied: int
    skipped: int
    error: str | None = None
    error_height: int | None = None


class _Synced:
    __slots__ = ("blocks", "next", "applied", "skipped", "future")

    def __init__(self, blocks: Sequence[tuple[Block, dict[str, Any]]],
                 future: asyncio.Future[SyncOutcome]) -> None:
        self.blocks = blocks
        self.next = 0
        self.applied = 0
        self.skipped = 0
        self.future = future


class _Submit:
    __slots__ = ("txs", "verified", "future")

    def __init__(self, txs: Sequence[Transaction], verified: Sequence[bool | None] | None,
                 future: asyncio.Future[list[SubmitOutcome]]) -> None:
        self.txs = txs
        self.verified = verified
        self.future = future


class _Build:
    """A BuildProposal the engine asked for, answered on a later turn of the loop."""

    __slots__ = ("action",)

    def __init__(self, action: BuildProposal) -> None:
        self.action = action


class _TxsSignal:
    """Tell the engine that transactions are waiting (queued once, however often it is raised)."""

    __slots__ = ()


_InboxItem = Received | _Submit | _Build | _TxsSignal | _Synced


class Runtime:
    """Owns the engine; only `run()` (one task) ever calls `engine.step`."""

    def __init__(
        self, engine: Engine, store: Store, executor: BlockExecutor, mempool: Mempool, metrics: NodeMetrics,
        *, tick_ms: int, max_inbox: int, on_commit: Callable[[CommittedBlock], None],
        on_dropped: Callable[[Sequence[Dropped]], None], logger: logging.Logger,
        transport: Transport | None = None, block_interval_ms: int = 0, full_block_txs: int = 1,
    ) -> None:
        self.engine = engine
        self._store = store
        self._executor = executor
        self._mempool = mempool
        self._metrics = metrics
        self._tick_s = tick_ms / 1000
        self._max_inbox = max_inbox
        self._on_commit = on_commit
        self._on_dropped = on_dropped
        self._log = logger
        self.transport = transport
        self._inbox: deque[_InboxItem] = deque()
        self._received = 0  # Received items in the inbox (the bounded kind)
        self._txs_signal_queued = False
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.running = False
        self.ticks = 0
        self._block_interval_s = block_interval_ms / 1000
        self._full_block_txs = full_block_txs
        self._last_commit_at = float("-inf")  # loop time of the last commit
        self._paced: _Build | None = None  # a proposal build waiting for the block interval

    # --- what other tasks call --------------------------------------------------------------

    def post_received(self, peer: str, data: bytes) -> bool:
        """Queue a peer's engine message; False (and counted) when the inbox is full or stopping."""
        if self._stopping or self._received >= self._max_inbox:
            self._metrics.dropped.labels("inbox_full" if not self._stopping else "stopping").inc()
            return False
        self._inbox.append(Received(peer, data))
        self._received += 1
        self._wakeup.set()
        return True

    async def submit(self, txs: Sequence[Transaction], verified: Sequence[bool | None] | None = None
                     ) -> list[SubmitOutcome]:
        """Admit transactions through the loop; `verified[i]` is a signature check already done."""
        if self._stopping:
            return [SubmitOutcome(tx.hash, "shutting_down", "the node is stopping") for tx in txs]
        future: asyncio.Future[list[SubmitOutcome]] = asyncio.get_running_loop().create_future()
        self._inbox.append(_Submit(txs, verified, future))
        self._wakeup.set()
        return await future

    async def apply_synced(self, blocks: Sequence[tuple[Block, dict[str, Any]]]) -> SyncOutcome:
        """Commit final blocks fetched by block sync, in height order, through the loop.

        The caller has verified each certificate and every transaction signature; here each block
        is checked against the committed head (link, nonces, execution, app_hash) and stored.
        Blocks the node committed meanwhile by consensus are skipped.
        """
        if self._stopping or not blocks:
            return SyncOutcome(0, 0, "the node is stopping" if blocks else None)
        future: asyncio.Future[SyncOutcome] = asyncio.get_running_loop().create_future()
        self._inbox.append(_Synced(blocks, future))
        self._wakeup.set()
        return await future

    def request_stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the engine until `request_stop()`; raises on a fatal error."""
        loop = asyncio.get_running_loop()
        self.running = True
        next_tick = loop.time() + self._tick_s
        try:
            while not self._stopping:
                now = loop.time()
                wake_at = next_tick
                if self._paced is not None:
                    due = self._build_due()
                    if now >= due:
                        paced, self._paced = self._paced, None
                        self._inbox.append(paced)
                    else:
                        wake_at = min(wake_at, due)
                if now >= next_tick:
                    self.ticks += 1
                    self._step(Tick())
                    self._report_dropped(self._mempool.expire())
                    next_tick += self._tick_s
                    if next_tick < now:
                        next_tick = now + self._tick_s  # after a stall, do not fire a burst of ticks
                elif self._inbox:
                    self._handle(self._inbox.popleft())
                else:
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout_at(wake_at):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                    continue
                # Let HTTP handlers and the transport run between events.
                await asyncio.sleep(0)
        finally:
            self.running = False
            self._stopping = True
            self._refuse_queued()

    def _refuse_queued(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, _Submit) and not item.future.done():
                item.future.set_result([SubmitOutcome(tx.hash, "shutting_down", "the node is stopping")
                                        for tx in item.txs])
            elif isinstance(item, _Synced) and not item.future.done():
                item.future.set_result(SyncOutcome(item.applied, item.skipped, "the node is stopping"))
        self._received = 0

    def _handle(self, item: _InboxItem) -> None:
        if isinstance(item, Received):
            self._received -= 1
            self._step(item)
            return
        if isinstance(item, _Build):
            if loop_time() < self._build_due():
                if self._paced is not None:  # superseded (a new round or term): nothing for the old one
                    old = self._paced.action
                    self._step(ProposalBuilt(old.height, old.round, None))
                self._paced = item  # the loop queues it again when the interval is up
                return
            action = item.action
            block = self._executor.build_proposal(action.height, action.round, action.parent)
            self._step(ProposalBuilt(action.height, action.round, block))
            return
        if isinstance(item, _TxsSignal):
            self._txs_signal_queued = False
            if self._mempool.ready_total > 0:
                self._step(TxsAvailable())
            return
        if isinstance(item, _Synced):
            self._apply_one_synced(item)
            return
        # A submitter that went away (future cancelled) still gets its transactions admitted.
        before_ready = self._mempool.ready_total
        try:
            outcomes = self._mempool.add(item.txs, item.verified)
        except BaseException:
            if not item.future.done():
                item.future.set_result([SubmitOutcome(tx.hash, "shutting_down", "the node halted")
                                        for tx in item.txs])
            raise
        if not item.future.done():
            item.future.set_result(outcomes)
        self._report_dropped(self._mempool.take_dropped())
        self._metrics.mempool_size.set(len(self._mempool))
        if self._mempool.ready_total > before_ready:
            self._step(TxsAvailable())

    def _build_due(self) -> float:
        """When the next proposal may be built: at once with a full block waiting."""
        if self._mempool.ready_total >= self._full_block_txs:
            return float("-inf")
        return self._last_commit_at + self._block_interval_s

    def _step(self, event: Event) -> None:
        for action in self.engine.step(event):
            if isinstance(action, Persist):
                self._store.save_engine(action.puts, action.deletes)
            elif isinstance(action, Send):
                if self.transport is None:
                    self._metrics.dropped.labels("no_transport").inc()
                else:
                    self.transport.send(action.to, action.data)
            elif isinstance(action, Broadcast):
                if self.transport is not None:
                    self.transport.broadcast(action.data)
            elif isinstance(action, BuildProposal):
                self._inbox.append(_Build(action))
            elif isinstance(action, Commit):
                if self._commit(action.block, action.certificate) and not self._txs_signal_queued:
                    self._txs_signal_queued = True
                    self._inbox.append(_TxsSignal())
            else:
                raise TypeError(f"engine returned an unknown action {action!r}")

    def _apply_one_synced(self, item: _Synced) -> None:
        if item.future.done():
            return  # the syncer went away (stopping); what was applied stays applied
        block, certificate = item.blocks[item.next]
        item.next += 1
        tip = self._store.tip
        error: str | None = None
        if block.height <= tip.height:
            if block.height == tip.height:
                committed_hash = tip.block_hash
            else:
                stored = self._store.load_block(block.height)
                committed_hash = stored.hash if stored is not None else ""
            if block.hash == committed_hash:
                item.skipped += 1
            else:
                error = f"block {block.height} differs from the block this node committed at that height"
        elif block.height != tip.height + 1:
            error = f"block {block.height} does not follow this node's head {tip.height}"
        else:
            reason = self._executor.check_block(block, tip, synced=True)
            if reason is not None:
                error = f"block {block.height}: {reason}"
            else:
                more = self._commit(block, certificate)
                item.applied += 1
                # At once, in the same turn: the engine must not finish a height the store has passed.
                self._step(ChainAdvanced(self._store.tip, (block.header.proposer,)))
                if more and not self._txs_signal_queued:
                    self._txs_signal_queued = True
                    self._inbox.append(_TxsSignal())
        if error is not None:
            item.future.set_result(SyncOutcome(item.applied, item.skipped, error, block.height))
        elif item.next == len(item.blocks):
            item.future.set_result(SyncOutcome(item.applied, item.skipped))
        else:
            self._inbox.append(item)  # the next block on a later turn: ticks and peers run in between

    def _commit(self, block: Block, certificate: dict[str, Any]) -> bool:
        """Store a final block and update everything that depends on it; True if txs remain ready."""
        started = time.perf_counter()
        self._last_commit_at = loop_time()
        execution = self._executor.execution_for(block)
        self._store.save_block(block, certificate, execution)
        self._executor.on_committed(block)
        dropped = self._mempool.on_committed(block.txs, execution.writes)
        self._metrics.observe_commit(block.height, len(block.txs), time.perf_counter() - started)
        self._metrics.mempool_size.set(len(self._mempool))
        self._on_commit(CommittedBlock(block, certificate, execution.receipts, tuple(dropped)))
        return self._mempool.ready_total > 0

    def _report_dropped(self, dropped: Sequence[Dropped]) -> None:
        if dropped:
            self._metrics.mempool_size.set(len(self._mempool))
            self._on_dropped(dropped)
