"""The runtime: the asyncio driver of the node's deterministic core (`node.core.NodeCore`).

One task runs `NodeCore.run_once()` until it has nothing to do, then sleeps until the core's next
wake-up time or until something is posted; between two units of work it yields to the event loop
so that HTTP handlers, ticks and the transport keep running. Submissions and synced blocks are
answered through futures. Everything the node decides is in the core; this module only moves
events in and answers out, and owns the clock (the event loop's).

Errors: whatever the core raises (a failed durable write, a committed block the node cannot
execute, an engine exception) ends `run()` with that exception, and the node halts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from consensus.api import Engine
from ledger.block import Block
from ledger.tx import Transaction
from node.core.executor import BlockExecutor
from node.core.machine import CommittedBlock, CoreSettings, NodeCore, SyncOutcome, Transport
from node.core.mempool import Dropped, Mempool
from node.metrics import NodeMetrics
from node.service import SubmitOutcome
from storage import Store

__all__ = ["CommittedBlock", "Runtime", "SyncOutcome", "Transport"]


class _Listener:
    def __init__(self, on_commit: Callable[[CommittedBlock], None],
                 on_dropped: Callable[[Sequence[Dropped]], None]) -> None:
        self.on_commit = on_commit
        self.on_dropped = on_dropped


class Runtime:
    """Drives one `NodeCore` on the running event loop; only `run()` (one task) calls into it."""

    def __init__(
        self, engine: Engine, store: Store, executor: BlockExecutor, mempool: Mempool, metrics: NodeMetrics,
        *, tick_ms: int, max_inbox: int, on_commit: Callable[[CommittedBlock], None],
        on_dropped: Callable[[Sequence[Dropped]], None], logger: logging.Logger,
        transport: Transport | None = None, block_interval_ms: int = 0, full_block_txs: int = 1,
    ) -> None:
        self._log = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        settings = CoreSettings(tick_s=tick_ms / 1000, max_inbox=max_inbox,
                                block_interval_s=block_interval_ms / 1000, full_block_txs=full_block_txs)
        self.core = NodeCore(engine, store, executor, mempool, metrics, settings, clock=self._now,
                             listener=_Listener(on_commit, on_dropped), transport=transport)
        self._wakeup = asyncio.Event()
        self.running = False

    def _now(self) -> float:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return 0.0  # built outside a loop: the first tick comes one interval after run() starts
        return self._loop.time()

    @property
    def engine(self) -> Engine:
        return self.core.engine

    @property
    def transport(self) -> Transport | None:
        return self.core.transport

    @transport.setter
    def transport(self, transport: Transport | None) -> None:
        self.core.transport = transport

    @property
    def ticks(self) -> int:
        return self.core.ticks

    # --- what other tasks call --------------------------------------------------------------

    def post_received(self, peer: str, data: bytes) -> bool:
        """Queue a peer's engine message; False (and counted) when the inbox is full or stopping."""
        if self.core.post_received(peer, data):
            self._wakeup.set()
            return True
        return False

    async def submit(self, txs: Sequence[Transaction], verified: Sequence[bool | None] | None = None
                     ) -> list[SubmitOutcome]:
        """Admit transactions through the core; `verified[i]` is a signature check already done."""
        future: asyncio.Future[list[SubmitOutcome]] = asyncio.get_running_loop().create_future()
        self.core.post_submit(txs, verified, future)
        self._wakeup.set()
        return await future

    async def apply_synced(self, blocks: Sequence[tuple[Block, dict[str, Any]]]) -> SyncOutcome:
        """Commit final blocks fetched by block sync, in height order (see `NodeCore.post_synced`)."""
        future: asyncio.Future[SyncOutcome] = asyncio.get_running_loop().create_future()
        self.core.post_synced(blocks, future)
        self._wakeup.set()
        return await future

    def request_stop(self) -> None:
        self.core.stopping = True
        self._wakeup.set()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the core until `request_stop()`; raises on a fatal error."""
        core = self.core
        self._loop = asyncio.get_running_loop()
        self.running = True
        core.start_clock()
        try:
            while not core.stopping:
                if core.run_once():
                    # Let HTTP handlers and the transport run between events.
                    await asyncio.sleep(0)
                    continue
                self._wakeup.clear()
                try:
                    async with asyncio.timeout_at(core.next_wakeup()):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
        finally:
            self.running = False
            core.stop()
