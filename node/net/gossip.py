"""Transaction gossip: accepted transactions batched and broadcast once, and peers' batches read back.

The validators form a full mesh, so a transaction needs one hop: the node that admitted it from a
client broadcasts it to every peer, and a node never passes on what it received by gossip (no
echo, no endless re-broadcast). What is accepted within `flush_s` goes out together, as JSON
arrays of at most `max_batch_txs` transactions and `max_batch_bytes` bytes (the receiving node
refuses bigger arrays, the transport bigger frames). Gossip is best effort, so what stays pending
is sent again: every `gossip_resend_after_s` a node re-gossips its transactions pending at least
that long (`Node._regossip`; without it a Raft follower's transaction that the leader missed
would never commit), and a client resubmitting a pending transaction sends it out again
(`Node.submit`). Both are bounded: nothing is re-sent more often than the resend period.

What a peer sends is outside input: `read_tx_batch` decodes one received batch within limits
(`TxBatchLimits`) and answers what it could not take as drop reasons, never as an exception. The
size is checked before anything is parsed; canonical arrays (what `TxBatcher` sends) are read by
`ledger.tx.decode_canonical_array` a run of transactions at a time, anything else one item at a
time, each item parsed within a window no larger than the largest transaction, so no single step
of the work is large. The reader is a generator that pauses between steps: the node's intake lets
the event loop run at each pause.

Must not import the p2p package: the broadcast function is handed in.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

from ledger.errors import Rejected
from ledger.tx import (
    MAX_RECORD_KEY_BYTES,
    MAX_RECORD_VALUE_BYTES,
    DecodeMemo,
    Transaction,
    decode_canonical_array,
    decode_tx,
)

# The longest JSON a valid transaction can take: every byte of a record's key and value written as
# a six-character \u00XX escape, plus the fixed fields (addresses, signature, chain id, nonce,
# names, punctuation and a little spacing) with room to spare. A longer item is not a transaction.
MAX_TX_JSON_CHARS = 6 * (MAX_RECORD_KEY_BYTES + MAX_RECORD_VALUE_BYTES) + 1024
# The slow path lets the caller run other work after about this much text was parsed, the fast
# path after this many transactions (each costs tens of microseconds: a hash and an object).
PAUSE_EVERY_CHARS = 64 * 1024
PAUSE_EVERY_TXS = 128

# Drop reasons (the `reason` label of ledgerd_dropped_messages_total).
MALFORMED = "malformed_tx_gossip"  # not a JSON array, or an item that is not a valid transaction
TOO_LARGE = "tx_gossip_too_large"  # more bytes than gossip_max_batch_bytes: refused unparsed
TOO_MANY = "tx_gossip_too_many"  # more items than max_batch_txs
TOO_DEEP = "tx_gossip_too_deep"  # nested deeper than a transaction is (the JSON parser's recursion limit)

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_CANONICAL_TX_START = b'{"body":'
_CANONICAL_SEPARATOR = b',{"body":'
_json_item = json.JSONDecoder().raw_decode


@dataclass(frozen=True, slots=True)
class TxBatchLimits:
    max_txs: int  # items in one batch
    max_bytes: int  # bytes of one batch, checked before any parsing


@dataclass(slots=True)
class TxBatch:
    """What one received batch gave: its transactions, and one drop reason per item (or for the
    whole batch) that was refused. A batch refused as a whole gives no transactions."""

    txs: list[Transaction] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def read_tx_batch(data: bytes, limits: TxBatchLimits, memo: DecodeMemo | None = None
                  ) -> Generator[None, None, TxBatch]:
    """Decode a peer's batch (a JSON array of transactions), pausing (`yield`) between pieces of
    work; returns the `TxBatch`. Never raises for anything in `data`."""
    if len(data) > limits.max_bytes:
        return _refused(TOO_LARGE)
    # Literal `{"body":` cannot occur inside a JSON string (its quote would be escaped) and every
    # canonical transaction starts with it, so this C-speed count bounds the fast path's item count.
    if data.count(_CANONICAL_TX_START) > limits.max_txs:
        return _refused(TOO_MANY)
    fast = yield from _read_canonical(data, memo)
    if fast is not None:
        return TxBatch(fast)
    yield
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _refused(MALFORMED)
    pos = _skip_whitespace(text, 0)
    if not text.startswith("[", pos):
        return _refused(MALFORMED)
    pos = _skip_whitespace(text, pos + 1)
    batch = TxBatch()
    items = 0
    since_pause = 0
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            items += 1
            if items > limits.max_txs:
                return _refused(TOO_MANY)
            window = text[pos:pos + MAX_TX_JSON_CHARS]
            try:
                obj, length = _json_item(window)
            except RecursionError:
                return _refused(TOO_DEEP)
            except ValueError:  # not JSON, or an item longer than any transaction
                return _refused(MALFORMED)
            try:
                batch.txs.append(decode_tx(obj, memo))
            except Rejected:
                batch.dropped.append(MALFORMED)
            pos = _skip_whitespace(text, pos + length)
            since_pause += length
            if since_pause >= PAUSE_EVERY_CHARS:
                since_pause = 0
                yield
            if text.startswith("]", pos):
                pos += 1
                break
            if not text.startswith(",", pos):
                return _refused(MALFORMED)
            pos = _skip_whitespace(text, pos + 1)
    if _skip_whitespace(text, pos) != len(text):
        return _refused(MALFORMED)
    return batch


def _read_canonical(data: bytes, memo: DecodeMemo | None) -> Generator[None, None, list[Transaction] | None]:
    """`decode_canonical_array(data)`, PAUSE_EVERY_TXS transactions at a time.

    In a canonical array `,{"body":` occurs only between two transactions (inside one, `{"body":`
    is its start, and no string holds a bare quote), so cutting there gives its items exactly, and
    each run of them in brackets is a canonical array again. Anything else fails some run: None.
    """
    if not (data.startswith(b"[") and data.endswith(b"]")):
        return None
    cuts = [1]
    at = data.find(_CANONICAL_SEPARATOR, 1)
    while at != -1:
        cuts.append(at)
        at = data.find(_CANONICAL_SEPARATOR, at + 1)
    if len(cuts) <= PAUSE_EVERY_TXS:
        return decode_canonical_array(data, memo=memo)
    txs: list[Transaction] = []
    ends = cuts[PAUSE_EVERY_TXS::PAUSE_EVERY_TXS] + [len(data) - 1]
    start = 1
    for end in ends:
        run = decode_canonical_array(b"[" + data[start:end] + b"]", memo=memo)
        if run is None:
            return None
        txs.extend(run)
        start = end + 1  # past the comma
        yield
    return txs


def decode_tx_batch(data: bytes, limits: TxBatchLimits, memo: DecodeMemo | None = None) -> TxBatch:
    """`read_tx_batch` without pauses, for callers that do not share an event loop."""
    reader = read_tx_batch(data, limits, memo)
    while True:
        try:
            next(reader)
        except StopIteration as done:
            result: TxBatch = done.value
            return result


def _skip_whitespace(text: str, pos: int) -> int:
    """The position after JSON whitespace from `pos` (the pattern also matches nothing)."""
    match = _WHITESPACE.match(text, pos)
    return pos if match is None else match.end()


def _refused(reason: str) -> TxBatch:
    return TxBatch(dropped=[reason])


Broadcast = Callable[[bytes], object]


class TxBatcher:
    """Gathers accepted transactions and broadcasts them in batches.

    With `flush_s == 0` every `add` is broadcast at once; otherwise the owner runs `run()` as a
    task, which sends whatever accumulated `flush_s` after the first transaction of a batch.
    While `has_peers()` says no peer would get a broadcast (a lone validator that listens for a
    newcomer, or every link down), `add` keeps nothing: a broadcast then reaches nobody anyway.
    """

    def __init__(self, broadcast: Broadcast, *, max_batch_txs: int, max_batch_bytes: int,
                 max_pending_txs: int, flush_s: float, on_overflow: Callable[[int], None],
                 has_peers: Callable[[], bool] = lambda: True) -> None:
        if max_batch_txs < 1 or max_batch_bytes < 2 or max_pending_txs < 1 or flush_s < 0:
            raise ValueError("gossip limits must be positive")
        self._broadcast = broadcast
        self._max_batch_txs = max_batch_txs
        self._max_batch_bytes = max_batch_bytes
        self._max_pending_txs = max_pending_txs
        self._flush_s = flush_s
        self._on_overflow = on_overflow
        self._has_peers = has_peers
        self._pending: list[bytes] = []
        self._wakeup = asyncio.Event()
        self.batches_sent = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, txs: Sequence[Transaction]) -> None:
        if not self._has_peers():
            return
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
