"""The transaction indexes, partitioned into epochs: a committed transaction by hash, and the
transactions that involve an account.

Both are keyed by random bytes (a hash, an address), and LevelDB pays for random keys in
compaction: a key that lands anywhere in the key space is merged again at every level it sinks to,
each time with about ten times its size of older keys around it, so the cost of every new entry
grew with the whole index (on a long haul of 2 million transfers compaction came to outweigh
the node's own work). So each key starts with its *epoch*: the chain is cut, at block boundaries,
into runs of about `EPOCH_TXS` transactions, and a block's entries go to the epoch in force when
it is stored. New entries then only ever meet the current epoch's entries, a closed epoch's keys
are never written again, and compaction costs about the same at the 100th epoch as at the first.
The price is on reads: a lookup by hash tries the epochs newest first (a miss in one is a Bloom
filter check), and an account's listing reads the epochs newest first.

Keys (epochs are 4-byte big-endian, heights 8, indexes 4; `~` is inverted, 2**64-1-h and
2**32-1-i, so that a forward scan lists the newest first):

    b"t" + epoch + tx hash(32)                           height + index + the tx's receipt (JSON)
    b"x" + epoch + address(32) + ~height + ~index        tx hash(32) + sender(32) + tx type (ASCII)
    b"k" + block hash(32)                                height: blocks by hash (not partitioned:
                                                         one entry a block)
    b"m" + b"epoch" + epoch                              the epoch's first height + the number of
                                                         transactions committed before it (8 + 8)
    b"m" + b"txcount"                                    transactions committed in all (8)

The account index holds one entry for every address a transaction involves (`tx_addresses`). The
epoch table is a handful of keys (one per `EPOCH_TXS` transactions) read once on open.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from ledger import keys
from ledger.block import Block
from ledger.tx import Propose, Transaction, Transfer
from storage.backend import WriteBatch, prefix_stop

TX_INDEX = b"t"
ACCOUNT_TXS = b"x"
BLOCK_BY_HASH = b"k"
META_EPOCH = b"mepoch"
META_TXCOUNT = b"mtxcount"

# About 40 MB of index entries an epoch at ~300 bytes a transaction: small beside LevelDB's 100 MB
# level 2, so an epoch's entries settle there and below without dragging older epochs along; and
# few enough epochs that a lookup of a 100-million-transaction chain's oldest hash tries 763.
EPOCH_TXS = 1 << 17

_LAST_HEIGHT = (1 << 64) - 1
_LAST_INDEX = (1 << 32) - 1

Get = Callable[[bytes], "bytes | None"]
Scan = Callable[[bytes, "bytes | None"], Generator[tuple[bytes, bytes], None, None]]


def epoch_bytes(epoch: int) -> bytes:
    return epoch.to_bytes(4, "big")


def tx_index_key(epoch: int, tx_hash: str) -> bytes:
    return TX_INDEX + epoch_bytes(epoch) + bytes.fromhex(tx_hash)


def inverted(height: int, index: int) -> bytes:
    return (_LAST_HEIGHT - height).to_bytes(8, "big") + (_LAST_INDEX - index).to_bytes(4, "big")


def account_tx_key(epoch: int, address: str, height: int, index: int) -> bytes:
    return ACCOUNT_TXS + epoch_bytes(epoch) + bytes.fromhex(address) + inverted(height, index)


def tx_addresses(tx: Transaction) -> list[str]:
    """The accounts a transaction involves, each once: its sender, a transfer's recipient, and any
    address a proposal names as an argument (the account it would freeze, allow or give a role)."""
    found = [tx.sender]
    payload = tx.payload
    if isinstance(payload, Transfer):
        found.append(payload.to)
    elif isinstance(payload, Propose):
        found.extend(value for _, value in payload.args if isinstance(value, str) and keys.is_address(value))
    return list(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class Epochs:
    """The epoch table: each epoch's first height and the transactions committed before it (in
    epoch order), and the transactions committed in all. Immutable: `place` says what a block's
    batch writes and the table after it, adopted once that batch is durable."""

    starts: tuple[int, ...] = (1,)
    txs_before: tuple[int, ...] = (0,)
    txcount: int = 0

    @property
    def current(self) -> int:
        return len(self.starts) - 1

    def of_height(self, height: int) -> int:
        """The epoch that holds the block at `height` (of the blocks stored)."""
        return max(bisect_right(self.starts, height) - 1, 0)

    def place(self, height: int, tx_count: int) -> tuple[int, list[tuple[bytes, bytes]], Epochs]:
        """The epoch of the block at `height` with `tx_count` transactions, the meta entries its
        batch must write, and the table once it is stored. A new epoch starts at a block when
        the current one already holds `EPOCH_TXS` transactions or more."""
        starts, before = self.starts, self.txs_before
        entries: list[tuple[bytes, bytes]] = []
        if self.txcount - before[-1] >= EPOCH_TXS:
            starts, before = (*starts, height), (*before, self.txcount)
            entries.append(_epoch_entry(len(starts) - 1, height, self.txcount))
        txcount = self.txcount + tx_count
        entries.append((META_TXCOUNT, txcount.to_bytes(8, "big")))
        return len(starts) - 1, entries, Epochs(starts, before, txcount)

    @classmethod
    def first_entries(cls) -> list[tuple[bytes, bytes]]:
        """What an empty chain's batch writes: epoch 0 from height 1, no transactions."""
        return [_epoch_entry(0, 1, 0), (META_TXCOUNT, (0).to_bytes(8, "big"))]

    @classmethod
    def load(cls, get: Get, scan: Scan) -> Epochs | None:
        """The stored table, or None when it is missing or unreadable (the indexes are rebuilt)."""
        raw_count = get(META_TXCOUNT)
        starts: list[int] = []
        before: list[int] = []
        for key, value in scan(META_EPOCH, prefix_stop(META_EPOCH)):
            epoch = key[len(META_EPOCH):]
            if len(epoch) != 4 or len(value) != 16 or int.from_bytes(epoch, "big") != len(starts):
                return None
            starts.append(int.from_bytes(value[:8], "big"))
            before.append(int.from_bytes(value[8:], "big"))
        if raw_count is None or len(raw_count) != 8 or not starts:
            return None
        return cls(tuple(starts), tuple(before), int.from_bytes(raw_count, "big"))


def _epoch_entry(epoch: int, height: int, txs_before: int) -> tuple[bytes, bytes]:
    return META_EPOCH + epoch_bytes(epoch), height.to_bytes(8, "big") + txs_before.to_bytes(8, "big")


def index_block(batch: WriteBatch, block: Block, epoch: int, receipts: Sequence[bytes],
                tx_hashes: Sequence[bytes] | None = None) -> None:
    """Put the index entries of `block` (stored in `epoch`, with these encoded receipts) into
    `batch`; `tx_hashes`: its transactions' hashes as bytes, when the caller has them already.

    Built with the parts every entry of the block shares made once: this runs for every
    transaction the node commits."""
    fromhex = bytes.fromhex
    hashes = [fromhex(tx.hash) for tx in block.txs] if tx_hashes is None else tx_hashes
    height_bytes = block.height.to_bytes(8, "big")
    tx_prefix = TX_INDEX + epoch_bytes(epoch)
    account_prefix = ACCOUNT_TXS + epoch_bytes(epoch)
    inverted_height = (_LAST_HEIGHT - block.height).to_bytes(8, "big")
    entries = [(BLOCK_BY_HASH + fromhex(block.hash), height_bytes)]
    append = entries.append
    for index, (tx, tx_hash, receipt) in enumerate(zip(block.txs, hashes, receipts, strict=True)):
        append((tx_prefix + tx_hash, height_bytes + index.to_bytes(4, "big") + receipt))
        where = inverted_height + (_LAST_INDEX - index).to_bytes(4, "big")
        sender = fromhex(tx.sender)
        entry = tx_hash + sender + tx.type.encode("ascii")
        append((account_prefix + sender + where, entry))
        payload = tx.payload
        if isinstance(payload, Transfer):
            if payload.to != tx.sender:
                append((account_prefix + fromhex(payload.to) + where, entry))
        elif isinstance(payload, Propose):
            for address in tx_addresses(tx)[1:]:
                append((account_prefix + fromhex(address) + where, entry))
    batch.put_all(entries)


def find_tx(get: Get, epochs: Epochs, tx_hash: str, height: int | None = None,
            newest: int | None = None) -> bytes | None:
    """The tx index entry of `tx_hash` (height + index + receipt), or None: tried in the epoch of
    `height` when the caller knows it, else in every epoch (or only the `newest` ones), newest
    first."""
    raw_hash = bytes.fromhex(tx_hash)
    if height is not None:
        return get(TX_INDEX + epoch_bytes(epochs.of_height(height)) + raw_hash)
    oldest = 0 if newest is None else max(epochs.current - newest + 1, 0)
    for epoch in range(epochs.current, oldest - 1, -1):
        found = get(TX_INDEX + epoch_bytes(epoch) + raw_hash)
        if found is not None:
            return found
    return None


def account_entries(scan: Scan, epochs: Epochs, address: str, after: tuple[int, int] | None, limit: int
                    ) -> list[tuple[int, int, str, str, str]]:
    """Up to `limit` (height, index, tx hash, sender, type) of the transactions involving
    `address`, newest first, starting below the (height, index) `after` when given."""
    out: list[tuple[int, int, str, str, str]] = []
    if limit < 1:
        return out
    account = bytes.fromhex(address)
    first = epochs.current if after is None else epochs.of_height(after[0])
    for epoch in range(first, -1, -1):
        prefix = ACCOUNT_TXS + epoch_bytes(epoch) + account
        start = prefix if after is None else prefix + inverted(*after) + b"\x00"
        scan_epoch = scan(start, prefix_stop(prefix))
        try:
            for key, value in scan_epoch:
                suffix = key[len(prefix):]
                height = _LAST_HEIGHT - int.from_bytes(suffix[:8], "big")
                index = _LAST_INDEX - int.from_bytes(suffix[8:12], "big")
                out.append((height, index, value[:32].hex(), value[32:64].hex(), value[64:].decode("ascii")))
                if len(out) >= limit:
                    return out
        finally:
            scan_epoch.close()  # LevelDB iterators hold a snapshot until closed
    return out
