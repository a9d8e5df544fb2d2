"""`CommitFeed`: who hears about commits. Waiters of `?wait=commit` and `/v1/events` streams.

It is the core's commit listener in the daemon: `on_commit` and `on_dropped` run on the event loop
inside the core's turn, right after a block's batch is durable, so nobody is told of a commit that
a crash could still undo. Both only hand results over (futures, bounded per-subscriber queues);
they never block the core.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from node.core import CommittedBlock
from node.core.mempool import Dropped
from node.reads import ChainReads, block_event, status_of
from node.service import TxStatus
from storage import Store


class _Subscriber:
    __slots__ = ("events", "wakeup", "lagged", "closed")

    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque()
        self.wakeup = asyncio.Event()
        self.lagged = False
        self.closed = False


class CommitFeed:
    def __init__(self, store: Store, reads: ChainReads, *, buffer_blocks: int,
                 accepting: Callable[[], bool]) -> None:
        """`accepting()`: False once the node stopped or halted (no new waiters or live streams)."""
        self._store = store
        self._reads = reads
        self._buffer_blocks = buffer_blocks
        self._accepting = accepting
        self._waiters: dict[str, list[asyncio.Future[TxStatus | None]]] = {}
        self._subscribers: set[_Subscriber] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def wait_committed(self, tx_hash: str, timeout_s: float) -> TxStatus | None:
        """The transaction's final status once known; None on timeout or when the node stops."""
        status = self._reads.tx_status(tx_hash)
        if status is not None and status.status != "pending":
            return status
        if not self._accepting():
            return None
        future: asyncio.Future[TxStatus | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_hash, []).append(future)
        try:
            async with asyncio.timeout(timeout_s):
                return await future  # None when the node stops meanwhile
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(tx_hash)
            if waiters is not None:
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[tx_hash]

    async def events(self, from_height: int | None) -> AsyncIterator[dict[str, Any]]:
        """Committed blocks in order from `from_height` (default: the next one), without gaps.

        Replays stored blocks first, then follows commits live. A subscriber that falls more than
        `buffer_blocks` behind gets one {"type": "error", "code": "subscriber_too_slow"} event
        and the stream ends; it can resume with from_height. The stream ends when the node stops.
        """
        store = self._store
        next_height = store.tip.height + 1 if from_height is None else max(from_height, 1)
        while next_height <= store.tip.height:
            if store.closed:
                return
            yield self._reads.stored_event(next_height)
            next_height += 1
        if not self._accepting():
            return
        # Caught up; no await since the check above, so no commit can slip in between.
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            while True:
                while not sub.events:
                    if sub.lagged:
                        yield {"type": "error", "code": "subscriber_too_slow",
                               "message": f"this stream fell more than {self._buffer_blocks} blocks "
                                          f"behind; reconnect with from_height={next_height}"}
                        return
                    if sub.closed:
                        return
                    sub.wakeup.clear()
                    await sub.wakeup.wait()
                event = sub.events.popleft()
                if event["height"] < next_height:
                    continue  # from_height was in the future
                if event["height"] != next_height:
                    raise RuntimeError(f"event stream gap: expected {next_height}, got {event['height']}")
                yield event
                next_height += 1
        finally:
            self._subscribers.discard(sub)

    # --- the core's listener ----------------------------------------------------------------

    def on_commit(self, committed: CommittedBlock) -> None:
        block = committed.block
        receipts = [r.to_json() for r in committed.receipts]
        for index, (tx, receipt) in enumerate(zip(block.txs, receipts, strict=True)):
            futures = self._waiters.pop(tx.hash, None)
            if futures:
                status = status_of(tx.hash, block.height, index, receipt)
                for future in futures:
                    if not future.done():
                        future.set_result(status)
        self.on_dropped(committed.dropped)
        if self._subscribers:
            event = block_event(block.hash, block.header.to_json(),
                                [(tx.hash, tx.body()) for tx in block.txs], receipts)
            for sub in self._subscribers:
                if sub.lagged:
                    continue
                if len(sub.events) >= self._buffer_blocks:
                    sub.lagged = True
                    sub.events.clear()
                else:
                    sub.events.append(event)
                sub.wakeup.set()

    def on_dropped(self, dropped: Sequence[Dropped]) -> None:
        for d in dropped:
            futures = self._waiters.pop(d.hash, None)
            if futures:
                status = TxStatus(d.hash, "failed", result={"code": d.code, "message": d.message})
                for future in futures:
                    if not future.done():
                        future.set_result(status)

    # --- stopping ---------------------------------------------------------------------------

    def close(self) -> None:
        """Wake every waiter (with None) and end every stream."""
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()
        for sub in self._subscribers:
            sub.closed = True
            sub.wakeup.set()
