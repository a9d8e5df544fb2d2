"""`NodeCore`: the one place that drives the consensus engine, as a synchronous state machine.

Work arrives through `post_*` calls (peer messages, submissions, blocks fetched by block sync) and
waits in an inbox; `run_once()` does one unit of it, or the tick that is due, and returns whether it
did anything. The driver (the daemon's asyncio loop, or the simulator) calls `run_once()` until it
answers False and then sleeps until `next_wakeup()` or until something new is posted. Each event
is fed to the engine and the actions it returns are executed strictly in order:

    Persist        -> one synced storage batch, finished before any later action is executed
                      (so no message that depends on it can leave the node before it is durable)
    Send/Broadcast -> the transport (non-blocking; the p2p layer queues and may drop)
    BuildProposal  -> queued; on its turn the executor builds a block, answered as ProposalBuilt
    Commit         -> one atomic storage batch, then the mempool, metrics and the commit listener

Block sync goes through the same inbox: each fetched block (certificate and signatures already
checked by the caller) is re-executed on the committed head like a proposal, stored like a Commit,
and immediately followed by `ChainAdvanced(tip)` (with the block's proposer, which the BFT proposer
schedule reads), so the engine never works on a height the store has already passed. One block per `run_once()`.

Block pacing: a proposal is built no sooner than `block_interval_s` after the last commit, unless a
full block (`full_block_txs`) is already waiting. Under load this trades a few milliseconds of
latency for fewer, fuller blocks (each block costs every node consensus messages, signatures and
synced writes whatever it holds), and it gives gossip the time to reach the other validators
before the proposal does. An idle chain's first transaction is proposed at once.

Work that actions ask for (building a proposal, telling the engine that transactions are still
waiting after a commit) is queued behind what is already in the inbox, not done on the spot, so a
deep mempool cannot starve ticks and peers while the chain drains it block after block.

Errors: a failed durable write (`StorageError`), a committed block this node cannot execute
(`Rejected`), or an exception from the engine is fatal: `run_once()` raises it and the driver halts
the node. Peer input never raises; engines drop and count bad messages themselves.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from consensus.api import (
    Action,
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
from node.core.executor import BlockExecutor
from node.core.mempool import Dropped, Mempool
from node.metrics import NodeMetrics
from node.service import SubmitOutcome
from storage import Store

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Transport(Protocol):
    """Where engine messages go. `p2p.TopicChannel` is one; calls must not block."""

    def send(self, peer: str, data: bytes) -> None | bool: ...

    def broadcast(self, data: bytes) -> None | int: ...


class Reply(Protocol[T_contra]):
    """Where an answer goes: an `asyncio.Future` in the daemon, a plain box in the simulator.
    `done()` is True once answered, or when the asker went away (a cancelled future)."""

    def done(self) -> bool: ...

    def set_result(self, result: T_contra, /) -> None: ...


class Box(Generic[T]):
    """A `Reply` for synchronous drivers: holds the answer once given."""

    __slots__ = ("result", "answered")

    def __init__(self) -> None:
        self.result: T | None = None
        self.answered = False

    def done(self) -> bool:
        return self.answered

    def set_result(self, result: T, /) -> None:
        self.result = result
        self.answered = True


@dataclass(frozen=True, slots=True)
class CommittedBlock:
    """What the commit listener hears: the stored block, its certificate, receipts and drops."""

    block: Block
    certificate: dict[str, Any]
    receipts: tuple[Receipt, ...]
    dropped: tuple[Dropped, ...]
    synced: bool = False  # stored by block sync rather than decided by this node's engine


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What the core did with a batch of synced blocks: blocks stored, blocks the node already had,
    and the reason the first refused block was refused (the rest of the batch is then left alone)."""

    applied: int
    skipped: int
    error: str | None = None
    error_height: int | None = None


class CoreListener(Protocol):
    """Who hears what the core decided (the node's waiters and event streams; the simulator's
    checkers)."""

    def on_commit(self, committed: CommittedBlock) -> None: ...

    def on_dropped(self, dropped: Sequence[Dropped]) -> None: ...


class _Synced:
    __slots__ = ("blocks", "next", "applied", "skipped", "reply")

    def __init__(self, blocks: Sequence[tuple[Block, dict[str, Any]]], reply: Reply[SyncOutcome]) -> None:
        self.blocks = blocks
        self.next = 0
        self.applied = 0
        self.skipped = 0
        self.reply = reply


class _Submit:
    __slots__ = ("txs", "verified", "reply")

    def __init__(self, txs: Sequence[Transaction], verified: Sequence[bool | None] | None,
                 reply: Reply[list[SubmitOutcome]]) -> None:
        self.txs = txs
        self.verified = verified
        self.reply = reply


class _Build:
    """A BuildProposal the engine asked for, answered on a later turn."""

    __slots__ = ("action",)

    def __init__(self, action: BuildProposal) -> None:
        self.action = action


class _TxsSignal:
    """Tell the engine that transactions are waiting (queued once, however often it is raised)."""

    __slots__ = ()


_InboxItem = Received | _Submit | _Build | _TxsSignal | _Synced


@dataclass(frozen=True, slots=True)
class CoreSettings:
    tick_s: float
    max_inbox: int  # peer messages waiting; more are dropped and counted
    block_interval_s: float = 0.0
    full_block_txs: int = 1


class NodeCore:
    """Owns the engine; only `run_once()` ever calls `engine.step`. Not thread-safe: one driver."""

    def __init__(self, engine: Engine, store: Store, executor: BlockExecutor, mempool: Mempool,
                 metrics: NodeMetrics, settings: CoreSettings, *, clock: Callable[[], float],
                 listener: CoreListener, transport: Transport | None = None) -> None:
        self.engine = engine
        self.store = store
        self.executor = executor
        self.mempool = mempool
        self.metrics = metrics
        self.transport = transport
        self._settings = settings
        self._clock = clock
        self._listener = listener
        # A last check of a synced block's certificate against the validator set in force at its
        # height, now that the state before it is committed (None: the syncer's check stands).
        self.synced_check: Callable[[Block, dict[str, Any]], str | None] | None = None
        self._inbox: deque[_InboxItem] = deque()
        self._received = 0  # Received items in the inbox (the bounded kind)
        self._txs_signal_queued = False
        self.stopping = False
        self.ticks = 0
        self._next_tick = clock() + settings.tick_s
        self._last_commit_at = float("-inf")  # clock time of the last commit
        self._paced: _Build | None = None  # a proposal build waiting for the block interval

    # --- what drivers post ------------------------------------------------------------------

    def post_received(self, peer: str, data: bytes) -> bool:
        """Queue a peer's engine message; False (and counted) when the inbox is full or stopping."""
        if self.stopping or self._received >= self._settings.max_inbox:
            self.metrics.dropped.labels("inbox_full" if not self.stopping else "stopping").inc()
            return False
        self._inbox.append(Received(peer, data))
        self._received += 1
        return True

    def post_submit(self, txs: Sequence[Transaction], verified: Sequence[bool | None] | None,
                    reply: Reply[list[SubmitOutcome]]) -> None:
        """Queue transactions for admission; `verified[i]` is a signature check already done."""
        if self.stopping:
            reply.set_result([SubmitOutcome(tx.hash, "shutting_down", "the node is stopping") for tx in txs])
            return
        self._inbox.append(_Submit(txs, verified, reply))

    def post_synced(self, blocks: Sequence[tuple[Block, dict[str, Any]]], reply: Reply[SyncOutcome]) -> None:
        """Queue final blocks fetched by block sync, in height order.

        The caller has verified each certificate and every transaction signature; here each block
        is checked against the committed head (link, nonces, execution, app_hash) and stored.
        Blocks the node committed meanwhile by consensus are skipped.
        """
        if self.stopping or not blocks:
            reply.set_result(SyncOutcome(0, 0, "the node is stopping" if blocks else None))
            return
        self._inbox.append(_Synced(blocks, reply))

    def stop(self) -> None:
        """Refuse everything queued and everything posted from now on."""
        self.stopping = True
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, _Submit) and not item.reply.done():
                item.reply.set_result([SubmitOutcome(tx.hash, "shutting_down", "the node is stopping")
                                       for tx in item.txs])
            elif isinstance(item, _Synced) and not item.reply.done():
                item.reply.set_result(SyncOutcome(item.applied, item.skipped, "the node is stopping"))
        self._received = 0

    # --- driving ----------------------------------------------------------------------------

    def start_clock(self) -> None:
        """The first tick comes one interval from now (call when the driver starts running)."""
        self._next_tick = self._clock() + self._settings.tick_s

    def next_wakeup(self) -> float:
        """The clock time at which `run_once()` has work even if nothing is posted."""
        wake_at = self._next_tick
        if self._paced is not None:
            wake_at = min(wake_at, self._build_due())
        return wake_at

    @property
    def idle(self) -> bool:
        """Nothing queued (a tick or a paced build may still come due)."""
        return not self._inbox

    def run_once(self) -> bool:
        """Do the tick that is due, or one queued item; False when there was nothing to do."""
        if self.stopping:
            return False
        now = self._clock()
        if self._paced is not None and now >= self._build_due():
            paced, self._paced = self._paced, None
            self._inbox.append(paced)
        if now >= self._next_tick:
            self.ticks += 1
            self._step(Tick())
            self._report_dropped(self.mempool.expire())
            self._next_tick += self._settings.tick_s
            if self._next_tick < now:
                self._next_tick = now + self._settings.tick_s  # after a stall, no burst of ticks
            return True
        if self._inbox:
            self._handle(self._inbox.popleft())
            return True
        return False

    # --- the work ---------------------------------------------------------------------------

    def _handle(self, item: _InboxItem) -> None:
        if isinstance(item, Received):
            self._received -= 1
            self._step(item)
        elif isinstance(item, _Build):
            self._build(item)
        elif isinstance(item, _TxsSignal):
            self._txs_signal_queued = False
            if self._work_ready():
                self._step(TxsAvailable())
        elif isinstance(item, _Synced):
            self._apply_one_synced(item)
        else:
            self._admit(item)

    def _build(self, item: _Build) -> None:
        if self._clock() < self._build_due():
            if self._paced is not None:  # superseded (a new round or term): nothing for the old one
                old = self._paced.action
                self._step(ProposalBuilt(old.height, old.round, None))
            self._paced = item  # queued again when the interval is up
            return
        action = item.action
        block = self.executor.build_proposal(action.height, action.round, action.parent)
        self._step(ProposalBuilt(action.height, action.round, block))

    def _admit(self, item: _Submit) -> None:
        # A submitter that went away (reply done) still gets its transactions admitted.
        before_ready = self.mempool.ready_total
        try:
            outcomes = self.mempool.add(item.txs, item.verified)
        except BaseException:
            if not item.reply.done():
                item.reply.set_result([SubmitOutcome(tx.hash, "shutting_down", "the node halted")
                                       for tx in item.txs])
            raise
        if not item.reply.done():
            item.reply.set_result(outcomes)
        self._report_dropped(self.mempool.take_dropped())
        self.metrics.mempool_size.set(len(self.mempool))
        if self.mempool.ready_total > before_ready:
            self._step(TxsAvailable())

    def _build_due(self) -> float:
        """When the next proposal may be built: at once with a full block waiting."""
        if self.mempool.ready_total >= self._settings.full_block_txs:
            return float("-inf")
        return self._last_commit_at + self._settings.block_interval_s

    def _step(self, event: Event) -> None:
        for action in self.engine.step(event):
            self._execute(action)

    def _execute(self, action: Action) -> None:
        """One action; `_step` keeps the engine's order (the simulator's broken variants do not)."""
        if isinstance(action, Persist):
            self.store.save_engine(action.puts, action.deletes)
        elif isinstance(action, Send):
            if self.transport is None:
                self.metrics.dropped.labels("no_transport").inc()
            else:
                self.transport.send(action.to, action.data)
        elif isinstance(action, Broadcast):
            if self.transport is not None:
                self.transport.broadcast(action.data)
        elif isinstance(action, BuildProposal):
            self._inbox.append(_Build(action))
        elif isinstance(action, Commit):
            if self._commit(action.block, action.certificate, synced=False):
                self._signal_txs()
        else:
            raise TypeError(f"engine returned an unknown action {action!r}")

    def _signal_txs(self) -> None:
        if not self._txs_signal_queued:
            self._txs_signal_queued = True
            self._inbox.append(_TxsSignal())

    def _apply_one_synced(self, item: _Synced) -> None:
        if item.reply.done():
            return  # the syncer went away (stopping); what was applied stays applied
        block, certificate = item.blocks[item.next]
        item.next += 1
        tip = self.store.tip
        error: str | None = None
        if block.height <= tip.height:
            if block.height == tip.height:
                committed_hash = tip.block_hash
            else:
                stored = self.store.load_block(block.height)
                committed_hash = stored.hash if stored is not None else ""
            if block.hash == committed_hash:
                item.skipped += 1
            else:
                error = f"block {block.height} differs from the block this node committed at that height"
        elif block.height != tip.height + 1:
            error = f"block {block.height} does not follow this node's head {tip.height}"
        else:
            reason = self.synced_check(block, certificate) if self.synced_check is not None else None
            if reason is None:
                reason = self.executor.check_block(block, tip, synced=True)
            if reason is not None:
                error = f"block {block.height}: {reason}"
            else:
                more = self._commit(block, certificate, synced=True)
                item.applied += 1
                # At once, in the same turn: the engine must not finish a height the store has passed.
                self._step(ChainAdvanced(self.store.tip, (block.header.proposer,)))
                if more:
                    self._signal_txs()
        if error is not None:
            item.reply.set_result(SyncOutcome(item.applied, item.skipped, error, block.height))
        elif item.next == len(item.blocks):
            item.reply.set_result(SyncOutcome(item.applied, item.skipped))
        else:
            self._inbox.append(item)  # the next block on a later turn: ticks and peers run in between

    def _commit(self, block: Block, certificate: dict[str, Any], *, synced: bool) -> bool:
        """Store a final block and update everything that depends on it; True if there is still
        something to propose (`_work_ready`)."""
        started = time.perf_counter()  # for the commit-duration metric only; decides nothing
        self._last_commit_at = self._clock()
        execution = self.executor.execution_for(block)
        self.store.save_block(block, certificate, execution)
        self.executor.on_committed(block)
        dropped = self.mempool.on_committed(block.txs, execution.writes)
        self.metrics.observe_commit(block.height, len(block.txs), time.perf_counter() - started)
        self.metrics.mempool_size.set(len(self.mempool))
        self._listener.on_commit(CommittedBlock(block, certificate, execution.receipts, tuple(dropped), synced))
        return self._work_ready()

    def _work_ready(self) -> bool:
        """Something to propose at the next height: ready transactions, or a validator-set change
        waiting for its activation height (proposed even as empty blocks; `BlockExecutor`)."""
        return self.mempool.ready_total > 0 or self.executor.activation_ahead(self.store.tip.height + 1)

    def _report_dropped(self, dropped: Sequence[Dropped]) -> None:
        if dropped:
            self.metrics.mempool_size.set(len(self.mempool))
            self._listener.on_dropped(dropped)
