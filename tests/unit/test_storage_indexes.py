"""The indexes (a transaction by hash, an account's transactions by height, blocks by hash) against a
full scan of the chain, their pagination, their epochs, and a database whose indexes are missing
or of the older layout being indexed on open."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ledger.block import make_block
from ledger.genesis import Genesis
from ledger.governance import decode_action
from ledger.state import OK, account_key, decode_account
from ledger.tx import Issue, Propose, Record, Transaction, Transfer, sign_tx
from storage import MemoryBackend, MemoryDisk, PlyvelBackend, Store, WriteBatch, indexes
from storage.backend import prefix_stop
from storage.indexes import (
    ACCOUNT_TXS,
    BLOCK_BY_HASH,
    META_EPOCH,
    META_TXCOUNT,
    TX_INDEX,
    Epochs,
    account_tx_key,
    index_block,
    tx_addresses,
    tx_index_key,
)
from storage.store import META_INDEXES, RECENT_EPOCHS
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, next_block

V0 = key(0, b"node")
ACCOUNTS = [key(i) for i in range(1, 6)]
OUTSIDER = key(99)  # never funded: only ever a recipient


def genesis() -> Genesis:
    return make_genesis([V0], ACCOUNTS)


def build_chain(store: Store, blocks: int, seed: int) -> None:
    """Blocks of transfers (some failing for lack of funds), records and self-transfers."""
    rng = random.Random(seed)
    nonces = {a.address: decode_account(store.state.get(account_key(a.address))).nonce for a in ACCOUNTS}
    for _ in range(blocks):
        txs: list[Transaction] = []
        for _ in range(rng.randrange(0, 6)):
            sender = rng.choice(ACCOUNTS)
            nonce = nonces[sender.address]
            nonces[sender.address] += 1
            roll = rng.random()
            if roll < 0.6:
                to = rng.choice([*ACCOUNTS, OUTSIDER])
                amount = rng.choice([1, 5, 10_000_000])  # the last always fails: insufficient_funds
                txs.append(sign_tx(sender, CHAIN, nonce, Transfer(to.address, "LDG", amount)))
            else:
                txs.append(sign_tx(sender, CHAIN, nonce, Record(f"k{rng.randrange(3)}", "v")))
        block, execution = next_block(store, txs, V0.address)
        store.save_block(block, certificate_for(block), execution)


def full_scan(store: Store) -> tuple[dict[str, list[tuple[int, int, str]]], dict[str, int]]:
    """What the indexes must say, from reading every stored block: per address its (height, index,
    tx hash), newest first, and every block's height by hash."""
    by_account: dict[str, list[tuple[int, int, str]]] = {}
    by_hash: dict[str, int] = {}
    for height in range(1, store.tip.height + 1):
        block = store.load_block(height)
        assert block is not None
        by_hash[block.hash] = height
        for index, tx in enumerate(block.txs):
            involved = {tx.sender}
            if isinstance(tx.payload, Transfer):
                involved.add(tx.payload.to)
            for address in involved:
                by_account.setdefault(address, []).append((height, index, tx.hash))
    for entries in by_account.values():
        entries.sort(reverse=True)
    return by_account, by_hash


def indexed(store: Store, address: str, page: int) -> list[tuple[int, int, str]]:
    """Every entry of the account index for `address`, read page by page through the cursor."""
    out: list[tuple[int, int, str]] = []
    after: tuple[int, int] | None = None
    for _ in range(10_000):
        found = store.account_txs(address, after, page)
        out.extend((h, i, tx_hash) for h, i, tx_hash, _sender, _type in found)
        if len(found) < page:
            return out
        after = (found[-1][0], found[-1][1])
    raise AssertionError("the cursor never reached the end of the index")


def assert_indexes_match(store: Store) -> None:
    by_account, by_hash = full_scan(store)
    assert OUTSIDER.address in by_account, "the chain should pay the outsider at least once"
    for account in [*ACCOUNTS, OUTSIDER]:
        want = by_account.get(account.address, [])
        assert indexed(store, account.address, 1000) == want
        assert indexed(store, account.address, 3) == want  # pages join up with no gap or repeat
    assert indexed(store, key(123).address, 5) == []
    for block_hash, height in by_hash.items():
        assert store.height_of_block(block_hash) == height
    assert store.height_of_block("00" * 32) is None
    for height in range(1, store.tip.height + 1):
        receipts = store.load_receipts(height)
        for index, tx_hash in enumerate(store.load_tx_hashes(height) or []):
            assert receipts is not None
            assert store.load_tx(tx_hash) == (height, index, receipts[index])
            assert store.load_tx(tx_hash, height) == (height, index, receipts[index])
            assert store.has_tx(tx_hash)
    assert store.load_tx("00" * 32) is None and not store.has_tx("00" * 32)


def test_account_index_and_block_hashes_match_a_full_scan() -> None:
    store = Store(MemoryBackend(MemoryDisk()), genesis())
    try:
        assert store.reindexed_blocks == 0
        build_chain(store, blocks=40, seed=7)
        assert_indexes_match(store)
        # Entries carry the sender and type, so a listing needs no block reads.
        address = ACCOUNTS[0].address
        for height, index, tx_hash, sender, tx_type in store.account_txs(address, None, 1000):
            tx = store.load_block(height).txs[index]  # type: ignore[union-attr]
            assert (tx.hash, tx.sender, tx.type) == (tx_hash, sender, tx_type)
    finally:
        store.close()


def _strip_indexes(raw: MemoryBackend | PlyvelBackend) -> int:
    """Make the database look as it did before the explorer's indexes existed: only the tx index,
    without epochs (b"t" + hash); returns how many keys went."""
    batch = WriteBatch()
    removed = 0
    for prefix in (ACCOUNT_TXS, BLOCK_BY_HASH, META_EPOCH, META_TXCOUNT):
        for k, _ in raw.scan(prefix, prefix_stop(prefix)):
            batch.delete(k)
            removed += 1
    for k, value in raw.scan(TX_INDEX, prefix_stop(TX_INDEX)):
        batch.delete(k)
        batch.put(TX_INDEX + k[5:], value)  # drop the epoch
    batch.delete(META_INDEXES)
    raw.write(batch, sync=True)
    return removed


def _unpartition_indexes(raw: MemoryBackend | PlyvelBackend) -> None:
    """Make the database look as version 1 wrote it: every index without epochs."""
    batch = WriteBatch()
    for prefix in (TX_INDEX, ACCOUNT_TXS):
        for k, value in raw.scan(prefix, prefix_stop(prefix)):
            batch.delete(k)
            batch.put(prefix + k[5:], value)
    for prefix in (META_EPOCH, META_TXCOUNT):
        for k, _ in raw.scan(prefix, prefix_stop(prefix)):
            batch.delete(k)
    batch.put(META_INDEXES, b"1")
    raw.write(batch, sync=True)


def _index_keys(raw: MemoryBackend | PlyvelBackend) -> list[bytes]:
    return [k for prefix in (TX_INDEX, ACCOUNT_TXS) for k, _ in raw.scan(prefix, prefix_stop(prefix))]


@pytest.mark.parametrize("older", ["no explorer indexes", "version 1"])
@pytest.mark.parametrize("backend", ["memory", "plyvel"])
def test_a_database_with_older_indexes_is_indexed_on_open(backend: str, older: str, tmp_path: Path) -> None:
    disk = MemoryDisk()
    path = tmp_path / "db"

    def open_store() -> Store:
        return Store(MemoryBackend(disk), genesis()) if backend == "memory" else Store.open(path, genesis())

    def raw() -> MemoryBackend | PlyvelBackend:
        return MemoryBackend(disk) if backend == "memory" else PlyvelBackend.open(path)

    store = open_store()
    build_chain(store, blocks=25, seed=3)
    store.close()
    handle = raw()
    if older == "no explorer indexes":
        assert _strip_indexes(handle) > 25
    else:
        _unpartition_indexes(handle)
    old_keys = set(_index_keys(handle))
    handle.close()

    store = open_store()
    try:
        assert store.reindexed_blocks == 25
        assert_indexes_match(store)
        # New blocks keep being indexed on top of the rebuilt ones.
        build_chain(store, blocks=5, seed=4)
        assert_indexes_match(store)
    finally:
        store.close()
    handle = raw()
    assert not old_keys & set(_index_keys(handle)), "an entry of the older layout was left behind"
    handle.close()
    store = open_store()  # built once: the next open does not index again
    try:
        assert store.reindexed_blocks == 0
        assert_indexes_match(store)
    finally:
        store.close()


def test_reindex_is_batched_and_marks_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), genesis())
    build_chain(store, blocks=12, seed=11)
    store.close()
    handle = MemoryBackend(disk)
    _strip_indexes(handle)
    handle.close()
    monkeypatch.setattr("storage.store.REINDEX_BATCH_ENTRIES", 5)
    progress: list[tuple[int, int]] = []
    store = Store(MemoryBackend(disk), genesis(), reindex_progress=lambda done, total: progress.append((done, total)))
    try:
        assert len(progress) >= 3 and all(total == 12 for _, total in progress)
        assert [done for done, _ in progress] == sorted({done for done, _ in progress})  # forward, each once
        assert_indexes_match(store)
        assert store.reindex() == 12  # idempotent: the same entries again
        assert_indexes_match(store)
    finally:
        store.close()
    handle = MemoryBackend(disk)
    assert handle.get(META_INDEXES) is not None
    handle.close()


def test_index_entries_are_the_documented_keys_and_values_byte_for_byte() -> None:
    """`index_block` builds its entries from shared parts; they must be exactly the block's
    hash entry, then for each transaction `tx_index_key(epoch, hash)` -> height + index + receipt and
    `account_tx_key(epoch, address, height, index)` -> hash + sender + type for every involved address."""
    a, b = ACCOUNTS[0], ACCOUNTS[1]
    txs = [sign_tx(a, CHAIN, 0, Transfer(b.address, "LDG", 1)),
           sign_tx(a, CHAIN, 1, Transfer(a.address, "LDG", 1)),  # to itself: one entry
           sign_tx(b, CHAIN, 0, Record("k", "v")),
           sign_tx(b, CHAIN, 1, Issue("GOLD", 5)),
           sign_tx(a, CHAIN, 2, Propose(*decode_action("freeze-account", {"account": OUTSIDER.address})))]
    store = Store(MemoryBackend(MemoryDisk()), genesis())
    block = make_block(CHAIN, 1, store.tip.block_hash, store.tip.timestamp + 1, V0.address, txs,
                       store.tip.app_hash, [OK] * len(txs))
    receipts = [OK.encode()] * len(txs)
    epoch = 3
    expected = [(BLOCK_BY_HASH + bytes.fromhex(block.hash), (1).to_bytes(8, "big"))]
    for index, tx in enumerate(txs):
        expected.append((tx_index_key(epoch, tx.hash), (1).to_bytes(8, "big") + index.to_bytes(4, "big")
                         + OK.encode()))
        value = bytes.fromhex(tx.hash) + bytes.fromhex(tx.sender) + tx.type.encode("ascii")
        expected += [(account_tx_key(epoch, address, 1, index), value) for address in tx_addresses(tx)]
    for hashes in (None, [bytes.fromhex(tx.hash) for tx in txs]):
        batch = WriteBatch()
        index_block(batch, block, epoch, receipts, hashes)
        assert batch.ops == expected
    assert len(expected) == 1 + 5 + 2 + 1 + 1 + 1 + 2
    assert all(k[1:5] == (3).to_bytes(4, "big") for k, _ in expected[1:])


def test_epochs_start_when_the_current_one_is_full_and_each_block_stays_in_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexes, "EPOCH_TXS", 5)
    epochs = Epochs()
    placed = []
    for height, count in enumerate([3, 0, 5, 2, 9, 1, 0], start=1):
        epoch, meta, after = epochs.place(height, count)
        placed.append(epoch)
        assert meta[-1] == (META_TXCOUNT, (epochs.txcount + count).to_bytes(8, "big"))
        assert len(meta) == (2 if epoch > epochs.current else 1)  # the new epoch's entry, then the count
        epochs = after
    assert placed == [0, 0, 0, 1, 1, 2, 2]
    assert (epochs.starts, epochs.txs_before, epochs.txcount) == ((1, 4, 6), (0, 8, 19), 20)
    assert [epochs.of_height(h) for h in range(1, 9)] == [0, 0, 0, 1, 1, 2, 2, 2]


def test_lookups_and_listings_across_epochs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With epochs of a few transactions the chain spans many; every lookup and listing (with its
    cursor) still matches a full scan, a block's new entries all go to the newest epoch, and a
    reopened database reads the same epochs without indexing again."""
    monkeypatch.setattr(indexes, "EPOCH_TXS", 7)
    store = Store.open(tmp_path / "db", genesis())
    try:
        build_chain(store, blocks=40, seed=5)
        epochs = store._epochs
        assert epochs.current >= 5
        assert list(epochs.starts) == sorted(set(epochs.starts)) and epochs.starts[0] == 1
        for epoch in range(1, epochs.current + 1):  # each epoch began once the one before was full
            assert epochs.txs_before[epoch] - epochs.txs_before[epoch - 1] >= 7
        assert_indexes_match(store)
        bounds = [*epochs.starts, store.tip.height + 1]
        for height in range(1, store.tip.height + 1):
            epoch = epochs.of_height(height)
            assert bounds[epoch] <= height < bounds[epoch + 1]
        last = store.tip.height
        hashes = store.load_tx_hashes(last) or []
        for tx_hash in hashes:
            assert store._get(tx_index_key(epochs.of_height(last), tx_hash)) is not None
        # Admission's replay check reads only the newest RECENT_EPOCHS epochs; has_tx reads them all.
        for height in range(1, store.tip.height + 1):
            recent = epochs.of_height(height) > epochs.current - RECENT_EPOCHS
            for tx_hash in store.load_tx_hashes(height) or []:
                assert store.recently_committed(tx_hash) == recent and store.has_tx(tx_hash)
    finally:
        store.close()
    store = Store.open(tmp_path / "db", genesis())
    try:
        assert store.reindexed_blocks == 0 and store._epochs == epochs
        build_chain(store, blocks=5, seed=6)
        assert_indexes_match(store)
    finally:
        store.close()


def test_a_damaged_epoch_table_means_indexing_again() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), genesis())
    build_chain(store, blocks=10, seed=8)
    store.close()
    handle = MemoryBackend(disk)
    batch = WriteBatch()
    batch.delete(META_TXCOUNT)
    handle.write(batch, sync=True)
    handle.close()
    store = Store(MemoryBackend(disk), genesis())
    try:
        assert store.reindexed_blocks == 10
        assert_indexes_match(store)
    finally:
        store.close()
