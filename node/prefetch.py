"""`ProposalPrefetch`: a proposal's transaction signatures checked in the workers before the engine
sees it.

A PBFT validator checks every transaction of a proposal it has not checked before (the core's
`BlockExecutor.check_block`, on the event loop). Under load, a proposal often arrives while the
gossip that brought its transactions is still queued here or being checked in the signature
workers: the core then checked those signatures a second time, on the event loop, one by one. A
benchmark of four validators counted 15 to 20% of each node's checks made twice that way.

So a received engine message that carries a block for the next height goes first to this
prefetcher: it decodes the block's transactions (through the node's decode memo, so the engine's
own decode then costs a lookup), has `SignatureChecks.verify` check the unknown ones in the workers
(waiting for checks already in flight rather than repeating them), notes the valid ones in the
mempool, and then hands the message to the runtime unchanged. What the engine decides does not
change: `check_block` still checks every signature that is not noted, so a message that skips
this path (it is busy, or the block does not decode) costs what it did before, and an invalid
signature is still found and refused there.

Bounded: one message at a time per peer and `MAX_QUEUED` in all; anything beyond goes straight
to the runtime. Owns its queue and its one task (started through the node's supervised `spawn`).
May import: `ledger`, `node.core.mempool`, `node.signatures`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ledger.block import block_transactions
from ledger.tx import DecodeMemo, Transaction
from node.core.mempool import Mempool
from node.signatures import VERIFY_INLINE_BELOW, SignatureChecks

MAX_QUEUED = 8  # messages waiting for their signatures, all peers together


class ProposalPrefetch:
    def __init__(self, carried_block: Callable[[bytes], tuple[int, bytes] | None], checks: SignatureChecks,
                 mempool: Mempool, memo: DecodeMemo, next_height: Callable[[], int],
                 post: Callable[[str, bytes], bool], logger: logging.Logger) -> None:
        self._carried_block = carried_block
        self._checks = checks
        self._mempool = mempool
        self._memo = memo
        self._next_height = next_height
        self._post = post
        self._log = logger
        self._queue: asyncio.Queue[tuple[str, bytes, list[Transaction]]] = asyncio.Queue(MAX_QUEUED)
        self._peers_waiting: set[str] = set()
        self.prefetched = 0  # messages whose signatures were checked here (tests)

    def deliver(self, peer: str, data: bytes) -> bool:
        """Hand an engine message from `peer` on: through the prefetch when it carries a block for
        the next height with enough unchecked transactions to be worth it, else straight to the
        runtime. Returns what the runtime's `post_received` returns (True when queued here)."""
        found = self._carried_block(data)
        if found is None or found[0] != self._next_height() or peer in self._peers_waiting \
                or self._queue.full():
            return self._post(peer, data)
        txs = block_transactions(found[1], self._memo)
        if txs is None:
            return self._post(peer, data)
        unchecked = [tx for tx in txs if not self._mempool.is_verified(tx)]
        if len(unchecked) < VERIFY_INLINE_BELOW:
            return self._post(peer, data)
        self._peers_waiting.add(peer)
        self._queue.put_nowait((peer, data, unchecked))
        return True

    async def run(self) -> None:
        """The owned task: check each queued message's signatures, then hand the message on."""
        while True:
            peer, data, txs = await self._queue.get()
            try:
                verdicts = await self._checks.verify(txs)
                if verdicts is not None:
                    for tx, ok in zip(txs, verdicts, strict=True):
                        if ok:
                            self._mempool.note_verified(tx)
                self.prefetched += 1
            except Exception as exc:  # the engine checks what is not noted: only the saving is lost
                self._log.warning("checking a proposal's signatures ahead failed: %s: %.200s", type(exc).__name__, exc)
            finally:
                self._peers_waiting.discard(peer)
                self._post(peer, data)
