"""The in-memory disk keeps LevelDB's durability promises, and `Store` keeps the storage contract
over it when the disk crashes or fails (GUIDE section 5: one synced atomic batch per block, a crash
leaves the old height or the new one, a failed durable write halts instead of being ignored)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ledger.state import account_key
from storage import DiskError, MemoryBackend, MemoryDisk, StorageError, Store, WriteBatch
from storage.store import BLOCK, ENGINE, STATE, height_key
from tests.helpers.chain import certificate_for, key, make_genesis, next_block, replay_chain, transfer

V0 = key(0, b"node")
ALICE, BOB = key(1), key(2)
GENESIS = make_genesis([V0], [ALICE, BOB])


def batch(*puts: tuple[bytes, bytes]) -> WriteBatch:
    out = WriteBatch()
    for k, v in puts:
        out.put(k, v)
    return out


def commit(store: Store, nonce: int) -> int:
    """Commit one real block (a transfer from ALICE) on the store's head; its height."""
    block, execution = next_block(store, [transfer(ALICE, nonce, BOB, 3)], V0.address)
    store.save_block(block, certificate_for(block), execution)
    return block.height


# --- the disk model ---------------------------------------------------------------------------

def test_a_crash_loses_a_write_that_was_not_synced() -> None:
    disk = MemoryDisk()
    db = MemoryBackend(disk)
    db.write(batch((b"a", b"1")), sync=False)
    assert db.get(b"a") == b"1"  # the running process reads its own unsynced write
    disk.crash()
    assert db.closed
    db = MemoryBackend(disk)
    assert db.get(b"a") is None


def test_a_synced_batch_survives_a_crash_with_every_write_before_it() -> None:
    disk = MemoryDisk()
    db = MemoryBackend(disk)
    db.write(batch((b"a", b"1")), sync=False)
    db.write(batch((b"b", b"2"), (b"c", b"3")), sync=True)
    db.write(batch((b"d", b"4")), sync=False)
    disk.crash()
    db = MemoryBackend(disk)
    assert list(db.scan()) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def test_a_crash_keeps_whole_unsynced_batches_in_write_order() -> None:
    for survivors in range(3):
        disk = MemoryDisk()
        db = MemoryBackend(disk)
        db.write(batch((b"x", b"0")), sync=True)
        db.write(batch((b"a", b"1"), (b"x", b"1")), sync=False)
        db.write(batch((b"b", b"2"), (b"x", b"2")), sync=False)
        assert disk.unsynced_records == 2
        disk.crash(survivors)
        got = dict(MemoryBackend(disk).scan())
        assert got == [{b"x": b"0"}, {b"x": b"1", b"a": b"1"}, {b"x": b"2", b"a": b"1", b"b": b"2"}][survivors]
    with pytest.raises(ValueError, match="survivors"):
        MemoryDisk().crash(1)


def test_a_clean_close_loses_nothing_and_a_second_handle_is_refused() -> None:
    disk = MemoryDisk("n1")
    db = MemoryBackend(disk)
    with pytest.raises(StorageError, match="n1 is in use"):
        MemoryBackend(disk)
    db.write(batch((b"a", b"1")), sync=False)
    db.close()
    with pytest.raises(DiskError, match="closed"):
        db.get(b"a")
    assert MemoryBackend(disk).get(b"a") == b"1"


def test_a_handle_from_before_a_crash_cannot_touch_the_restarted_disk() -> None:
    disk = MemoryDisk()
    old = MemoryBackend(disk)
    disk.crash()
    new = MemoryBackend(disk)
    old.close()  # must not release the new handle's lock
    with pytest.raises(StorageError, match="in use"):
        MemoryBackend(disk)
    with pytest.raises(DiskError, match="closed"):
        old.write(batch((b"a", b"1")), sync=True)
    assert new.get(b"a") is None


def test_scans_are_ordered_bounded_and_read_a_snapshot() -> None:
    db = MemoryBackend(MemoryDisk())
    db.write(batch(*[(bytes([k]), b"v") for k in (5, 1, 255, 3, 0)]), sync=True)
    deleting = WriteBatch()
    deleting.delete(b"\x03")
    db.write(deleting, sync=False)
    assert [k for k, _ in db.scan()] == [b"\x00", b"\x01", b"\x05", b"\xff"]
    assert [k for k, _ in db.scan(b"\x01", b"\x05")] == [b"\x01"]
    scan = db.scan(b"\x01")
    assert next(scan) == (b"\x01", b"v")
    db.write(batch((b"\x02", b"new"), (b"\x05", b"changed")), sync=True)
    assert list(scan) == [(b"\x05", b"v"), (b"\xff", b"v")]


def test_a_failed_write_keeps_nothing() -> None:
    disk = MemoryDisk()
    db = MemoryBackend(disk)
    disk.faults.fail_writes = 1
    with pytest.raises(DiskError, match="write error"):
        db.write(batch((b"a", b"1")), sync=True)
    assert db.get(b"a") is None and disk.unsynced_records == 0
    db.write(batch((b"b", b"2")), sync=True)  # the fault fired once
    assert disk.durable_items() == {b"b": b"2"}


def test_a_failed_sync_leaves_the_batch_undecided_and_refuses_later_writes() -> None:
    outcomes = set()
    for survivors in (0, 1):
        disk = MemoryDisk()
        db = MemoryBackend(disk)
        disk.faults.fail_syncs = 1
        with pytest.raises(DiskError, match="sync error"):
            db.write(batch((b"a", b"1")), sync=True)
        assert db.get(b"a") is None
        with pytest.raises(DiskError, match="refused after an earlier failed sync"):
            db.write(batch((b"b", b"2")), sync=True)
        disk.crash(survivors)
        outcomes.add(MemoryBackend(disk).get(b"a"))
    assert outcomes == {None, b"1"}


def test_read_faults_hit_gets_and_scans_under_the_prefix_only() -> None:
    disk = MemoryDisk()
    db = MemoryBackend(disk)
    db.write(batch((b"a1", b"1"), (b"b1", b"2")), sync=True)
    disk.faults.failing_read_prefixes.add(b"b")
    assert db.get(b"a1") == b"1"
    with pytest.raises(DiskError, match="read error"):
        db.get(b"b1")
    with pytest.raises(DiskError, match="read error"):
        list(db.scan())
    disk.faults.failing_read_prefixes.clear()
    assert db.get(b"b1") == b"2"


# --- Store over the disk ----------------------------------------------------------------------

def test_a_failed_block_write_raises_and_the_head_stays() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), GENESIS)
    commit(store, 0)
    before = store.tip
    disk.faults.fail_writes = 1
    with pytest.raises(StorageError, match="durable write of block 2 to memory failed: write error"):
        commit(store, 1)
    assert store.tip == before
    assert store.load_block(2) is None
    store.close()
    assert Store(MemoryBackend(disk), GENESIS).tip == before


def test_a_failed_engine_write_raises() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), GENESIS)
    disk.faults.fail_syncs = 1
    with pytest.raises(StorageError, match="durable write of consensus state"):
        store.save_engine({"view": b"\x01"}, ())
    with pytest.raises(StorageError, match="durable write of block 1"):
        commit(store, 0)
    assert store.tip.height == 0


def test_a_read_fault_raises_storage_error_wherever_store_reads() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), GENESIS)
    commit(store, 0)
    store.save_engine({"view": b"\x01"}, ())
    disk.faults.failing_read_prefixes.update({BLOCK, ENGINE, STATE})
    with pytest.raises(StorageError, match="reading from the database at memory failed: read error"):
        store.load_block(1)
    with pytest.raises(StorageError, match="reading from the database"):
        list(store.load_blocks(1, 5))
    with pytest.raises(StorageError, match="reading from the database"):
        store.load_engine()
    with pytest.raises(StorageError, match="reading state from the database"):
        store.state.get(account_key(ALICE.address))
    store.close()
    # Opening reads the head's block: the fault refuses the open with a clear error, and the
    # refused open releases the disk.
    with pytest.raises(StorageError, match="reading from the database"):
        Store(MemoryBackend(disk), GENESIS)
    disk.faults.failing_read_prefixes.clear()
    assert Store(MemoryBackend(disk), GENESIS).tip.height == 1


def test_a_block_is_one_record_and_a_crash_leaves_the_old_height_or_the_new_one() -> None:
    """The sync of block 3 fails; whatever part of the unsynced log a crash keeps, the reopened store
    is at height 2 or 3, and its blocks, receipts, tx index and state replay from genesis."""
    heights = set()
    for survivors in (0, 1):
        disk = MemoryDisk()
        store = Store(MemoryBackend(disk), GENESIS)
        commit(store, 0)
        commit(store, 1)
        disk.faults.fail_syncs = 1
        with pytest.raises(StorageError, match="durable write of block 3"):
            commit(store, 2)
        assert store.tip.height == 2
        # Everything block 3 implies went to the disk as one record: a crash keeps all of it or none.
        assert disk.unsynced_records == 1
        disk.crash(survivors)
        reopened = Store(MemoryBackend(disk), GENESIS)
        replay_chain(reopened, GENESIS)
        heights.add(reopened.tip.height)
        reopened.close()
    assert heights == {2, 3}


def test_a_crash_after_commits_keeps_every_committed_block() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), GENESIS)
    for nonce in range(3):
        commit(store, nonce)
    store.save_engine({"view": b"\x07"}, ())
    tip = store.tip
    assert disk.unsynced_records == 0  # every write of Store is synced
    disk.crash()
    assert store.closed
    store = Store(MemoryBackend(disk), GENESIS)
    assert store.tip == tip and store.load_engine() == {"view": b"\x07"}
    replay_chain(store, GENESIS)
    assert store.load_block(3) is not None and store.load_block(4) is None


def test_a_block_above_the_head_after_a_crash_is_corruption() -> None:
    disk = MemoryDisk()
    Store(MemoryBackend(disk), GENESIS).close()
    db = MemoryBackend(disk)
    db.write(batch((height_key(BLOCK, 1), b"{}")), sync=True)
    db.close()
    with pytest.raises(StorageError, match="corrupt: a block is stored above the head 0"):
        Store(MemoryBackend(disk), GENESIS)


# --- what storage may import ------------------------------------------------------------------

def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_storage_imports_only_ledger_consensus_and_plyvel_in_its_backend() -> None:
    package = Path(__file__).resolve().parents[2] / "storage"
    ours = {"ledger", "consensus", "storage", "node", "p2p", "tests"}
    for module in sorted(package.glob("*.py")):
        roots = imported_roots(module)
        assert not roots & (ours - {"ledger", "consensus", "storage"}), module.name
        assert not roots & {"asyncio", "aiohttp", "time", "random", "threading"}, module.name
        if module.name != "plyvel_backend.py":
            assert "plyvel" not in roots, module.name
