"""Transaction gossip out of this node: accepted transactions, batched, broadcast once.

The validators form a full mesh, so a transaction needs one hop: the node that admitted it from a
client broadcasts it to every peer, and a node never passes on what it received by gossip (no
echo, no endless re-broadcast). What is accepted within `flush_s` goes out together, as JSON
arrays of at most `max_batch_txs` transactions and `max_batch_bytes` bytes (the receiving node
refuses bigger arrays, the transport bigger frames). Gossip is best effort, so what stays pending
is sent again: every `gossip_resend_after_s` a node re-gossips its transactions pending at least
that long (`Node._regossip`; without it a Raft follower's transaction that the leader missed
would never commit), and a client resubmitting a pending transaction sends it out again
(`Node.submit`). Both are bounded: nothing is re-sent more often than the resend period.

Must not import the p2p package: the broadcast function is handed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from ledger.tx import Transaction

Broadcast = Callable[[bytes], object]


class TxBatcher:
    """Gathers accepted transactions and broadcasts them in batches.

    With `flush_s == 0` every `add` is broadcast at once; otherwise the owner runs `run()` as a
    task, which sends whatever accumulated `flush_s` after the first transaction of a batch.
    """

    def __init__(self, broadcast: Broadcast, *, max_batch_txs: int, max_batch_bytes: int,
                 max_pending_txs: int, flush_s: float, on_overflow: Callable[[int], None]) -> None:
        if max_batch_txs < 1 or max_batch_bytes < 2 or max_pending_txs < 1 or flush_s < 0:
            raise ValueError("gossip limits must be positive")
        self._broadcast = broadcast
        self._max_batch_txs = max_batch_txs
        self._max_batch_bytes = max_batch_bytes
        self._max_pending_txs = max_pending_txs
        self._flush_s = flush_s
        self._on_overflow = on_overflow
        self._pending: list[bytes] = []
        self._wakeup = asyncio.Event()
        self.batches_sent = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, txs: Sequence[Transaction]) -> None:
        room = self._max_pending_txs - len(self._pending)
        if len(txs) > room:
            self._on_overflow(len(txs) - max(room, 0))
            txs = txs[:max(room, 0)]
        for tx in txs:
            encoded = tx.encode()
            if len(encoded) + 2 <= self._max_batch_bytes:
                self._pending.append(encoded)
            else:
                self._on_overflow(1)
        if not self._pending:
            return
        if self._flush_s == 0:
            self.flush()
        else:
            self._wakeup.set()

    def flush(self) -> None:
        """Broadcast everything pending now, in as few batches as the limits allow."""
        pending, self._pending = self._pending, []
        batch: list[bytes] = []
        size = 2  # the brackets
        for encoded in pending:
            extra = len(encoded) + (1 if batch else 0)
            if batch and (len(batch) >= self._max_batch_txs or size + extra > self._max_batch_bytes):
                self._send(batch)
                batch, size, extra = [], 2, len(encoded)
            batch.append(encoded)
            size += extra
        if batch:
            self._send(batch)

    def _send(self, batch: list[bytes]) -> None:
        self._broadcast(b"[" + b",".join(batch) + b"]")
        self.batches_sent += 1

    async def run(self) -> None:
        """The owned task (only needed with `flush_s > 0`): flush each batch after its window."""
        while True:
            await self._wakeup.wait()
            # The batching window: more submissions arriving meanwhile share one broadcast.
            await asyncio.sleep(self._flush_s)
            self._wakeup.clear()
            self.flush()
