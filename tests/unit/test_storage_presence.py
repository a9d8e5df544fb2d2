"""The state view's presence filter: absent keys are answered without a database read once it is
built, and no key that exists is ever answered absent: not the stored ones, not those written while
it was being built a slice at a time, not those written after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.state import account_key, decode_account
from storage import DiskError, MemoryBackend, MemoryDisk, StorageError, Store, WriteBatch
from storage.presence import PresenceBuild, PresenceFilter
from storage.store import STATE
from tests.helpers.chain import certificate_for, key, make_genesis, next_block, transfer

V0 = key(0, b"node")
FUNDED = [key(i) for i in range(1, 4)]


class CountingBackend(MemoryBackend):
    """A memory backend that counts the state reads that reach it."""

    def __init__(self, disk: MemoryDisk) -> None:
        super().__init__(disk)
        self.state_reads = 0

    def get(self, key: bytes) -> bytes | None:
        if key[:1] == STATE:
            self.state_reads += 1
        return super().get(key)


def pay_fresh(store: Store, count: int, first: int) -> list[str]:
    """A block of `count` transfers from FUNDED[0] to accounts never seen before; their addresses."""
    sender = FUNDED[0]
    nonce = decode_account(store.state.get(account_key(sender.address))).nonce
    fresh = [key(first + i, b"fresh") for i in range(count)]
    txs = [transfer(sender, nonce + i, to) for i, to in enumerate(fresh)]
    block, execution = next_block(store, txs, V0.address)
    assert all(r.ok for r in execution.receipts)
    store.save_block(block, certificate_for(block), execution)
    return [a.address for a in fresh]


def test_the_filter_never_forgets_a_key_and_rarely_imagines_one() -> None:
    bloom = PresenceFilter(bits_log2=20)  # 16 bits a key for the 65,536 below
    present = [os.urandom(33) for _ in range(65_536)]
    for k in present:
        bloom.add(k)
    assert all(bloom.may_contain(k) for k in present)
    absent = [os.urandom(33) for _ in range(50_000)]
    false_positives = sum(bloom.may_contain(k) for k in absent)
    assert false_positives < 0.02 * len(absent)  # about 0.6% expected
    with pytest.raises(ValueError):
        PresenceFilter(bits_log2=40)


def test_absent_keys_are_answered_without_a_read_once_built() -> None:
    disk = MemoryDisk()
    backend = CountingBackend(disk)
    store = Store(backend, make_genesis([V0], FUNDED), presence_now=False)
    try:
        assert not store.state.presence_ready
        missing = account_key(key(500, b"never").address)
        before = backend.state_reads
        assert store.state.get(missing) is None
        assert backend.state_reads == before + 1  # not built yet: the database answers
        assert store.state.build_presence()
        before = backend.state_reads
        for i in range(200):
            assert store.state.get(account_key(key(1000 + i, b"never").address)) is None
        assert backend.state_reads - before < 10  # false positives only
        for account in FUNDED:  # stored keys are read
            assert decode_account(store.state.get(account_key(account.address))).balances == {"LDG": 1_000_000}
    finally:
        store.close()


def test_keys_written_during_and_after_a_sliced_build_are_found() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), make_genesis([V0], FUNDED))
    stored = pay_fresh(store, 40, first=0)
    store.close()
    store = Store(MemoryBackend(disk), make_genesis([V0], FUNDED), presence_now=False)
    try:
        written: list[str] = []
        slices = 0
        while not store.state.build_presence(max_keys=7):
            slices += 1
            written += pay_fresh(store, 3, first=100 + 3 * slices)  # between two slices
        assert slices >= 5 and store.state.presence_ready
        written += pay_fresh(store, 5, first=900)
        for address in [*stored, *written]:
            assert decode_account(store.state.get(account_key(address))).balances == {"LDG": 1}, address
    finally:
        store.close()


def test_a_read_failure_abandons_the_build_and_reads_go_to_the_database() -> None:
    disk = MemoryDisk()
    store = Store(MemoryBackend(disk), make_genesis([V0], FUNDED))
    pay_fresh(store, 10, first=0)
    store.close()
    disk.faults.failing_read_prefixes.add(STATE)
    with pytest.raises(StorageError, match="state keys"):
        Store(MemoryBackend(disk), make_genesis([V0], FUNDED))  # presence_now: the open fails
    store = Store(MemoryBackend(disk), make_genesis([V0], FUNDED), presence_now=False)
    try:
        with pytest.raises(StorageError, match="state keys"):
            store.state.build_presence(max_keys=3)
        disk.faults.failing_read_prefixes.clear()
        assert not store.state.build_presence()  # abandoned: never answers
        assert not store.state.presence_ready
        assert decode_account(store.state.get(account_key(FUNDED[1].address))).nonce == 0
    finally:
        store.close()


def test_closing_mid_build_releases_the_leveldb_iterator(tmp_path: Path) -> None:
    genesis = make_genesis([V0], FUNDED)
    store = Store.open(tmp_path / "db", genesis)
    pay_fresh(store, 30, first=0)
    store.close()
    store = Store.open(tmp_path / "db", genesis, presence_now=False)
    assert not store.state.build_presence(max_keys=2)
    store.close()
    store = Store.open(tmp_path / "db", genesis)  # the directory is free again
    try:
        assert store.state.presence_ready and store.tip.height == 1
    finally:
        store.close()


def test_a_cancelled_build_never_completes() -> None:
    def keys() -> Iterator[bytes]:
        yield from (b"a", b"b", b"c")

    bloom = PresenceFilter(bits_log2=10)
    build = PresenceBuild(bloom, keys())
    assert not build.step(1) and build.added == 1
    build.cancel()
    assert not build.step() and not build.complete
    complete = PresenceBuild(bloom, keys())
    assert complete.step() and complete.complete and complete.added == 3


class LandsThenFails(MemoryBackend):
    """A backend whose next write lands and is then reported failed (as a failed sync can leave it)."""

    fail_next = False

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        super().write(batch, sync=sync)
        if self.fail_next:
            self.fail_next = False
            raise DiskError("sync failed (injected, after the write landed)")


def test_keys_of_a_write_reported_failed_but_landed_are_not_answered_absent() -> None:
    backend = LandsThenFails(MemoryDisk())
    store = Store(backend, make_genesis([V0], FUNDED))
    try:
        assert store.state.presence_ready
        backend.fail_next = True
        with pytest.raises(StorageError, match="durable write"):
            pay_fresh(store, 3, first=0)
        landed = [key(i, b"fresh").address for i in range(3)]
        for address in landed:
            assert decode_account(store.state.get(account_key(address))).balances == {"LDG": 1}
    finally:
        store.close()
