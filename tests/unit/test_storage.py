"""Storage contract (GUIDE section 5): atomic block batches, order-preserving keys, engine records,
and a clear StorageError for databases that are locked, corrupt, foreign or unwritable.

Every test that is not about LevelDB's files runs twice: over plyvel and over the in-memory disk,
since the simulator runs the same `Store` over the latter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Protocol

import plyvel
import pytest

from ledger.block import make_block
from ledger.genesis import Genesis
from ledger.state import Execution, account_key, chain_app_hash, decode_account
from storage import KeyValueStore, MemoryBackend, MemoryDisk, PlyvelBackend, StorageError, Store, WriteBatch
from storage.store import BLOCK, height_key
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, next_block, transfer

V0 = key(0, b"node")
ALICE, BOB = key(1), key(2)


def genesis(chain_id: str = CHAIN) -> Genesis:
    return make_genesis([V0], [ALICE, BOB], chain_id=chain_id)


def balance(store: Store, who: str) -> int:
    return decode_account(store.state.get(account_key(who))).balances.get("LDG", 0)


class Place(Protocol):
    """Where one database lives: a directory for plyvel, a `MemoryDisk` for the in-memory backend."""

    def open(self, g: Genesis) -> Store: ...

    def raw(self) -> KeyValueStore:
        """A bare handle on the same data, for tampering with it the way an outside tool would."""
        ...


class LevelDBPlace:
    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, g: Genesis) -> Store:
        return Store.open(self.path, g)

    def raw(self) -> KeyValueStore:
        return PlyvelBackend.open(self.path)


class MemoryPlace:
    def __init__(self) -> None:
        self.disk = MemoryDisk("node0")

    def open(self, g: Genesis) -> Store:
        return Store(MemoryBackend(self.disk), g)

    def raw(self) -> KeyValueStore:
        return MemoryBackend(self.disk)


@pytest.fixture(params=["plyvel", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "plyvel":
        return LevelDBPlace(tmp_path / "db")
    return MemoryPlace()


def test_first_open_writes_genesis_state_and_head_at_height_zero(place: Place) -> None:
    g = genesis()
    store = place.open(g)
    try:
        assert store.tip.height == 0
        assert store.tip.block_hash == g.hash()
        assert store.tip.app_hash == g.initial_app_hash()
        assert balance(store, ALICE.address) == 1_000_000
        assert store.load_block(0) is None and store.load_block(1) is None
    finally:
        store.close()


def test_committed_block_survives_reopen_with_index_receipts_and_state(place: Place) -> None:
    g = genesis()
    store = place.open(g)
    txs = [transfer(ALICE, 0, BOB, 10), transfer(ALICE, 1, BOB, 5_000_000)]
    block, execution = next_block(store, txs, V0.address)
    store.save_block(block, certificate_for(block), execution)
    store.close()

    store = place.open(g)
    try:
        tip = store.tip
        assert (tip.height, tip.block_hash, tip.app_hash) == (1, block.hash, block.header.app_hash)
        loaded = store.load_block(1)
        assert loaded is not None and loaded.hash == block.hash
        assert [t.hash for t in loaded.txs] == [t.hash for t in txs]
        assert store.load_certificate(1) == certificate_for(block)
        assert store.load_receipts(1) == [{"code": "ok"}, execution.receipts[1].to_json()]
        assert store.load_receipts(1)[1]["code"] == "insufficient_funds"  # type: ignore[index]
        assert store.load_tx_location(txs[1].hash) == (1, 1)
        assert store.load_tx(txs[1].hash) == (1, 1, execution.receipts[1].to_json())
        assert store.load_tx(txs[0].hash) == (1, 0, {"code": "ok"})
        assert store.load_tx_location("00" * 32) is None
        assert balance(store, BOB.address) == 1_000_010
    finally:
        store.close()


def test_a_block_that_does_not_extend_the_head_is_refused(place: Place) -> None:
    store = place.open(genesis())
    try:
        block, execution = next_block(store, [transfer(ALICE, 0, BOB)], V0.address)
        store.save_block(block, certificate_for(block), execution)
        with pytest.raises(StorageError, match="stored chain ends at height 1"):
            store.save_block(block, certificate_for(block), execution)
        assert store.tip.height == 1
    finally:
        store.close()


def test_height_keys_sort_in_height_order_and_blocks_read_by_range(place: Place) -> None:
    heights = [1, 2, 255, 256, 65_536, 2**40]
    keys_ = [height_key(BLOCK, h) for h in heights]
    assert sorted(keys_) == keys_
    store = place.open(genesis())
    try:
        hashes = []
        for nonce in range(4):
            block, execution = next_block(store, [transfer(ALICE, nonce, BOB)], V0.address)
            store.save_block(block, certificate_for(block), execution)
            hashes.append(block.hash)
        got = list(store.load_blocks(2, 4))
        assert [h for h, _ in got] == [2, 3]
        assert list(store.load_blocks(0, 100))[0][0] == 1
        assert len(list(store.load_blocks(0, 100))) == 4
        assert list(store.load_blocks(5, 10)) == []
    finally:
        store.close()


def test_engine_records_are_namespaced_saved_and_deleted(place: Place) -> None:
    store = place.open(genesis())
    store.save_engine({"view": b"\x00\x01", "locked": b"abc"}, ())
    store.save_engine({"view": b"\x00\x02"}, ("locked",))
    store.close()
    store = place.open(genesis())
    try:
        assert store.load_engine() == {"view": b"\x00\x02"}
        assert balance(store, ALICE.address) == 1_000_000
    finally:
        store.close()


def test_a_database_of_another_chain_is_refused(place: Place) -> None:
    place.open(genesis()).close()
    with pytest.raises(StorageError, match="belongs to chain 'ledger-test'.*not to 'other-chain'"):
        place.open(genesis("other-chain"))
    # Same chain id, different genesis (other allocations): still another chain.
    other = make_genesis([V0], [ALICE], amount=7)
    with pytest.raises(StorageError, match="belongs to chain"):
        place.open(other)


def test_a_database_locked_by_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store.open(path, genesis()).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import plyvel, sys
            db = plyvel.DB({str(path)!r})
            print("open", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StorageError, match="in use by another process"):
            Store.open(path, genesis())
    finally:
        holder.kill()
        holder.wait()


def test_a_database_open_twice_in_one_process_is_refused(place: Place) -> None:
    store = place.open(genesis())
    try:
        with pytest.raises(StorageError, match="in use"):
            place.open(genesis())
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["current", "manifest"])
def test_a_corrupt_database_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "db"
    Store.open(path, genesis()).close()
    if damage == "current":
        (path / "CURRENT").write_text("MANIFEST-999999\n")
    else:
        manifest = next(p for p in path.iterdir() if p.name.startswith("MANIFEST"))
        manifest.write_bytes(b"\xff" * manifest.stat().st_size)
    with pytest.raises(StorageError, match="corrupt"):
        Store.open(path, genesis())


def test_a_head_that_names_a_missing_block_is_corruption(place: Place) -> None:
    store = place.open(genesis())
    block, execution = next_block(store, [transfer(ALICE, 0, BOB)], V0.address)
    store.save_block(block, certificate_for(block), execution)
    store.close()
    db = place.raw()
    damage = WriteBatch()
    damage.delete(height_key(BLOCK, 1))
    db.write(damage, sync=True)
    db.close()
    with pytest.raises(StorageError, match="corrupt: block 1 named by the head is missing"):
        place.open(genesis())


def test_a_leveldb_that_is_not_ours_is_refused(place: Place) -> None:
    db = place.raw()
    foreign = WriteBatch()
    foreign.put(b"hello", b"world")
    db.write(foreign, sync=True)
    db.close()
    with pytest.raises(StorageError, match="not a ledgerd database"):
        place.open(genesis())


def test_an_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot"):
        Store.open(tmp_path / "file" / "db", genesis())
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(StorageError, match="cannot"):
            Store.open(ro / "db", genesis())


def test_a_failed_durable_write_raises_instead_of_being_ignored(place: Place) -> None:
    store = place.open(genesis())
    block, execution = next_block(store, [transfer(ALICE, 0, BOB)], V0.address)
    store.close()
    with pytest.raises(StorageError, match="durable write of block 1 .* failed"):
        store.save_block(block, certificate_for(block), execution)
    with pytest.raises(StorageError, match="durable write of consensus state"):
        store.save_engine({"x": b"1"}, ())
    assert store.tip.height == 0
    # Reads of a closed store fail the same way, not with the backend's own exception.
    with pytest.raises(StorageError, match="reading from the database"):
        store.load_block(1)
    with pytest.raises(StorageError, match="reading state from the database"):
        store.state.get(account_key(ALICE.address))


def test_committed_governance_reads_follow_every_block_that_writes_them() -> None:
    """The state view remembers governance keys it read (absent ones too); a block that writes one
    must be what the next read sees, on the same Store."""
    store = Store(MemoryBackend(MemoryDisk()), genesis())
    flags, policy = b"ga" + bytes.fromhex(ALICE.address), b"gp"
    assert store.state.get(flags) is None and store.state.get(policy) is None  # both remembered
    for n, value in enumerate((b'{"allowed":true,"frozen":false,"roles":[]}',
                               b'{"allowed":true,"frozen":true,"roles":[]}')):
        writes = {flags: value, policy: b'{"accounts":"open","allowed":%d,"issue":"anyone"}' % n}
        app_hash = chain_app_hash(store.tip.app_hash, writes)
        block = make_block(CHAIN, store.tip.height + 1, store.tip.block_hash, store.tip.timestamp + 1,
                           V0.address, (), app_hash, ())
        store.save_block(block, certificate_for(block), Execution((), writes, app_hash))
        assert store.state.get(flags) == value
        assert store.state.get(policy) == writes[policy]
    assert store.state.get(b"ga" + bytes.fromhex(BOB.address)) is None


def test_leveldb_tables_carry_a_bloom_filter_so_reads_of_absent_keys_skip_them(tmp_path: Path) -> None:
    """Every table the node's LevelDB writes has a Bloom filter block (most reads of a key that is
    not there, such as a transfer to a new account, then touch no table file), and a key that is
    there is still found."""
    db = PlyvelBackend.open(tmp_path / "db")
    for chunk in range(6):  # tables are written when the log is flushed (at the latest on reopening)
        batch = WriteBatch()
        batch.put_all((f"acct/{chunk:02d}/{i:06d}".encode(), bytes(1024)) for i in range(1000))
        db.write(batch, sync=False)
    db.close()
    db = PlyvelBackend.open(tmp_path / "db")  # flushes the log to a table on open
    try:
        assert db.get(b"acct/03/000500") == bytes(1024) and db.get(b"acct/99/000000") is None
    finally:
        db.close()
    tables = sorted((tmp_path / "db").glob("*.ldb"))
    assert tables, "no table was written"
    assert all(b"filter.leveldb.BuiltinBloomFilter2" in t.read_bytes() for t in tables)


def test_leveldb_tables_are_not_compressed_and_the_memtable_holds_16_mib(tmp_path: Path) -> None:
    """Tables are stored as written (compressing them was most of LevelDB's CPU under load), and
    6 MiB of writes stay in the memtable: no table file until the database is reopened."""
    db = PlyvelBackend.open(tmp_path / "db")
    for chunk in range(6):
        batch = WriteBatch()
        batch.put_all((f"acct/{chunk:02d}/{i:06d}".encode(), bytes(1024)) for i in range(1024))
        db.write(batch, sync=False)
    assert not list((tmp_path / "db").glob("*.ldb")), "a 4 MiB memtable would have been flushed by now"
    db.close()
    db = PlyvelBackend.open(tmp_path / "db")
    try:
        assert db.get(b"acct/05/001023") == bytes(1024)
    finally:
        db.close()
    # Zeros compress to almost nothing: stored as they are, the tables hold at least the 6 MiB.
    assert sum(t.stat().st_size for t in (tmp_path / "db").glob("*.ldb")) >= 6 * 1024 * 1024


def test_a_database_written_with_compressed_tables_still_reads(tmp_path: Path) -> None:
    """Nodes before the uncompressed tables wrote Snappy-compressed ones; LevelDB marks each block
    with its compression, so upgrading a node keeps its data readable (compaction rewrites it)."""
    old = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, compression="snappy")
    old.put(b"acct/old", b"x" * 4096)
    old.compact_range()  # into a table, compressed
    old.close()
    assert any(t.stat().st_size < 4096 for t in (tmp_path / "db").glob("*.ldb"))
    db = PlyvelBackend.open(tmp_path / "db")
    try:
        assert db.get(b"acct/old") == b"x" * 4096
    finally:
        db.close()
