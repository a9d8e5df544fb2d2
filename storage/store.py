"""The block store, tx index, state and engine records of one node, over a `storage.backend` store.

Key layout (every key starts with a one-byte namespace; heights are 8-byte big-endian so that
byte order is height order and blocks can be read by range):

    b"m" + name                  meta: b"mformat", b"mchain_id", b"mgenesis_hash", b"mtip"
    b"b" + height(8)             block bytes (`Block.encode()`)
    b"c" + height(8)             commit certificate (canonical JSON)
    b"r" + height(8)             receipts of the block's transactions (canonical JSON array)
    b"h" + height(8)             the block's transaction hashes, 32 bytes each, in block order
    b"s" + state key             committed state; the state key is `ledger.state`'s own
    b"e" + record name (UTF-8)   consensus engine records (`consensus.api.Persist`)
    b"t", b"x", b"k", b"mepoch", b"mtxcount"
                                 the transaction indexes (a transaction by hash, an account's
                                 transactions) in epochs, and blocks by hash: `storage.indexes`

`mtip` is the head marker: it is written in the same batch as the block it names, so on open the
head, the block at that height and the state always agree. The indexes are written in that batch
too. `mindexes` names the layout of complete indexes (`INDEXES_VERSION`): a database whose
indexes are missing, older or half built is indexed again from its stored blocks on open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from consensus.api import ChainTip
from ledger.block import Block, decode_block
from ledger.encoding import canonical_json_trusted
from ledger.errors import Rejected
from ledger.genesis import Genesis
from ledger.state import Execution
from storage import indexes
from storage.backend import KeyValueStore, WriteBatch, prefix_stop
from storage.errors import DiskError, StorageError
from storage.indexes import Epochs
from storage.plyvel_backend import PlyvelBackend
from storage.presence import PresenceBuild, PresenceFilter

FORMAT_VERSION = b"1"

META = b"m"
BLOCK = b"b"
CERTIFICATE = b"c"
RECEIPTS = b"r"
TX_HASHES = b"h"
STATE = b"s"
ENGINE = b"e"

META_FORMAT = META + b"format"
META_CHAIN_ID = META + b"chain_id"
META_GENESIS_HASH = META + b"genesis_hash"
META_TIP = META + b"tip"
META_INDEXES = META + b"indexes"
# 1: the explorer's indexes without epochs; 2: `storage.indexes`, every index partitioned in epochs.
INDEXES_VERSION = b"2"
# Index entries per batch while indexing a stored chain again: bounds the memory one batch holds (a
# crash midway only means the build starts over on the next open).
REINDEX_BATCH_ENTRIES = 200_000
# Epochs `recently_committed` looks in (each `storage.indexes.EPOCH_TXS` transactions or more).
RECENT_EPOCHS = 4
RECORD_STATE = b"r"  # ledger.state's namespace of records: b"r" + owner(32) + key (UTF-8)
GOVERNANCE_STATE = b"g"  # ledger.governance's namespace in state

_Row = TypeVar("_Row")


def height_key(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


def _tip_json(tip: ChainTip) -> bytes:
    return canonical_json_trusted(
        {"height": tip.height, "hash": tip.block_hash, "timestamp": tip.timestamp, "app_hash": tip.app_hash}
    )


def _decode_tip(raw: bytes) -> ChainTip:
    obj = json.loads(raw)
    return ChainTip(int(obj["height"]), str(obj["hash"]), int(obj["timestamp"]), str(obj["app_hash"]))


def genesis_tip(genesis: Genesis) -> ChainTip:
    """Height 0: the genesis hash stands in for a block hash (it is block 1's prev_hash)."""
    return ChainTip(0, genesis.hash(), genesis.genesis_time, genesis.initial_app_hash())


class StateView:
    """Committed state as a `ledger.state.StateReader`.

    Governance records (state keys starting with b"g": the policy, account and asset flags, the
    committee, ...) are read for every transaction's permission check, by every new overlay, and
    rarely change; most account flags do not even exist. So this view remembers what it read of
    them (absent ones too), up to `GOV_CACHE_ENTRIES` keys (then it starts over), and `Store`
    tells it every key a committed block wrote (`written`), which it forgets. The store's batch
    of a block is the only writer of committed state once it is open, so the view never answers
    from an older state than the database holds.

    Keys that exist are also kept in a `storage.presence.PresenceFilter` once `build_presence` has
    read them all (every key a block writes is added as it is stored, from the start): a key the
    filter has never seen is answered "absent" without a read (see `storage.presence` for why).
    """

    GOV_CACHE_ENTRIES = 65_536

    def __init__(self, backend: KeyValueStore) -> None:
        # Bound once: execution reads state once per touched key, the hottest read of the node.
        self._get = backend.get
        self._backend = backend
        self._location = backend.location
        self._gov: dict[bytes, bytes | None] = {}
        self._presence = PresenceFilter()
        self._build: PresenceBuild | None = None
        # The filter answers only once it holds every stored key.
        self._may_contain: Callable[[bytes], bool] | None = None

    def get(self, key: bytes) -> bytes | None:
        gov = key[:1] == GOVERNANCE_STATE
        if gov and key in self._gov:
            return self._gov[key]
        may_contain = self._may_contain
        if may_contain is not None and not may_contain(key):
            value = None
        else:
            try:
                value = self._get(STATE + key)
            except DiskError as exc:
                raise StorageError(f"reading state from the database at {self._location} failed: {exc}") from exc
        if gov:
            if len(self._gov) >= self.GOV_CACHE_ENTRIES:
                self._gov.clear()
            self._gov[key] = value
        return value

    def written(self, keys: Iterable[bytes]) -> None:
        """Forget what was read of `keys`, and note that they may exist: a block is writing them."""
        gov = self._gov
        add = self._presence.add
        for key in keys:
            add(key)
            if key[:1] == GOVERNANCE_STATE:
                gov.pop(key, None)

    @property
    def presence_ready(self) -> bool:
        return self._may_contain is not None

    def build_presence(self, max_keys: int | None = None) -> bool:
        """Add up to `max_keys` more stored keys to the presence filter (None: all that are left);
        True once it holds them all and answers. Raises StorageError when reading them fails (the
        build is then abandoned and the filter never answers)."""
        if self._may_contain is not None:
            return True
        if self._build is None:
            self._build = PresenceBuild(self._presence, self._stored_state_keys())
        try:
            done = self._build.step(max_keys)
        except DiskError as exc:
            raise StorageError(f"reading the state keys of the database at {self._location} failed: "
                               f"{exc}") from exc
        if done:
            self._may_contain = self._presence.may_contain
        return done

    def _stored_state_keys(self) -> Iterator[bytes]:
        keys = self._backend.scan_keys(STATE, prefix_stop(STATE))
        try:
            for key in keys:
                yield key[1:]
        finally:
            close = getattr(keys, "close", None)
            if close is not None:
                close()  # LevelDB iterators hold a snapshot until closed

    def close(self) -> None:
        """Abandon an unfinished build (its iterator must not outlive the database)."""
        if self._build is not None and not self._build.complete:
            self._build.cancel()


class Store:
    """One node's database over a storage backend; `close()` it last, after the runtime stops.

    `Store.open(path, genesis)` opens the LevelDB at `path`; `Store(backend, genesis)` runs over any
    `storage.backend.KeyValueStore` (the simulator's `storage.memory.MemoryBackend`)."""

    def __init__(self, backend: KeyValueStore, genesis: Genesis, *, presence_now: bool = True,
                 reindex_progress: Callable[[int, int], None] | None = None) -> None:
        """Check that `backend` holds this chain (writing genesis on first use) and read its head.

        `presence_now`: read every state key into the state view's presence filter before returning;
        otherwise the owner calls `state.build_presence` a slice at a time (the node does, between
        events, so that a large database opens at once) and reads go to the database until then.
        `reindex_progress(blocks indexed, blocks in all)` is called as the indexes are built again,
        when they must be (see `reindex`), after each batch.

        The store owns `backend` from here on: when this raises StorageError (not a ledgerd database,
        another chain's, corrupt, unreadable), the backend is closed."""
        self._backend = backend
        self.location = backend.location
        self.chain_id = genesis.chain_id
        self.genesis_hash = genesis.hash()
        self._epochs = Epochs()  # the stored table, read below (or made by `reindex`)
        # Blocks indexed on open because the database's indexes were missing or older (0: none).
        self.reindexed_blocks = 0
        try:
            self.tip = self._check_or_init(genesis)
            epochs = Epochs.load(self._get, self._scan) if self._get(META_INDEXES) == INDEXES_VERSION else None
            if epochs is None:
                self.reindexed_blocks = self.reindex(reindex_progress)
            else:
                self._epochs = epochs
            self.state = StateView(backend)
            if presence_now:
                self.state.build_presence()
        except BaseException:
            backend.close()
            raise

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, genesis: Genesis, *, presence_now: bool = True,
             reindex_progress: Callable[[int, int], None] | None = None) -> Store:
        """Open (creating on first use) the LevelDB at `path` for the chain `genesis` defines (the
        keyword arguments: see `Store`).

        Raises StorageError when it is locked, corrupt, not a ledgerd database, or another chain's.
        """
        return cls(PlyvelBackend.open(Path(path)), genesis, presence_now=presence_now,
                   reindex_progress=reindex_progress)

    def _get(self, key: bytes) -> bytes | None:
        try:
            return self._backend.get(key)
        except DiskError as exc:
            raise StorageError(f"reading from the database at {self.location} failed: {exc}") from exc

    def _scan(self, start: bytes, stop: bytes | None) -> Generator[tuple[bytes, bytes], None, None]:
        return self._reading(self._backend.scan(start, stop))

    def _reading(self, rows: Iterator[_Row]) -> Generator[_Row, None, None]:
        """`rows` of a backend scan, with a failed read raised as StorageError."""
        try:
            yield from rows
        except DiskError as exc:
            raise StorageError(f"reading from the database at {self.location} failed: {exc}") from exc

    def _is_empty(self) -> bool:
        scan = self._scan(b"", None)
        try:
            return next(scan, None) is None
        finally:
            scan.close()  # LevelDB iterators hold a snapshot until closed

    def _check_or_init(self, genesis: Genesis) -> ChainTip:
        where = self.location
        genesis_hash = self.genesis_hash
        fmt = self._get(META_FORMAT)
        if fmt is None:
            if not self._is_empty():
                raise StorageError(f"the database at {where} is not a ledgerd database (no ledgerd meta)")
            tip = genesis_tip(genesis)
            batch = WriteBatch()
            for key, value in genesis.initial_writes().items():
                batch.put(STATE + key, value)
            batch.put(META_CHAIN_ID, genesis.chain_id.encode())
            batch.put(META_GENESIS_HASH, genesis_hash.encode())
            batch.put(META_TIP, _tip_json(tip))
            batch.put_all(Epochs.first_entries())
            batch.put(META_INDEXES, INDEXES_VERSION)
            batch.put(META_FORMAT, FORMAT_VERSION)
            try:
                self._backend.write(batch, sync=True)
            except DiskError as exc:
                raise StorageError(f"cannot write genesis to the database at {where}: {exc}") from exc
            return tip
        if fmt != FORMAT_VERSION:
            raise StorageError(
                f"the database at {where} has format {fmt!r}; this ledgerd reads format {FORMAT_VERSION!r}"
            )
        chain_id = (self._get(META_CHAIN_ID) or b"").decode("utf-8", "replace")
        stored_genesis = (self._get(META_GENESIS_HASH) or b"").decode("utf-8", "replace")
        if chain_id != genesis.chain_id or stored_genesis != genesis_hash:
            raise StorageError(
                f"the database at {where} belongs to chain {chain_id!r} (genesis {stored_genesis[:16]}), "
                f"not to {genesis.chain_id!r} (genesis {genesis_hash[:16]}); "
                "use a fresh data dir for this genesis"
            )

        def corrupt(what: str) -> StorageError:
            return StorageError(f"the database at {where} is corrupt: {what}")

        raw_tip = self._get(META_TIP)
        if raw_tip is None:
            raise corrupt("the head marker is missing")
        try:
            tip = _decode_tip(raw_tip)
        except (ValueError, KeyError, TypeError) as exc:
            raise corrupt(f"unreadable head marker ({exc})") from exc
        if tip.height == 0:
            if tip != genesis_tip(genesis):
                raise corrupt("its height-0 head is not this genesis")
        else:
            raw = self._get(height_key(BLOCK, tip.height))
            if raw is None or self._get(height_key(CERTIFICATE, tip.height)) is None \
                    or self._get(height_key(RECEIPTS, tip.height)) is None:
                raise corrupt(f"block {tip.height} named by the head is missing")
            try:
                block = decode_block(raw)
            except Rejected as exc:
                raise corrupt(f"block {tip.height}: {exc.message}") from exc
            if block.hash != tip.block_hash or block.header.app_hash != tip.app_hash:
                raise corrupt(f"block {tip.height} does not match the head")
        if self._get(height_key(BLOCK, tip.height + 1)) is not None:
            raise corrupt(f"a block is stored above the head {tip.height}")
        return tip

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index the stored chain again (`storage.indexes`), for a database whose indexes are missing,
        of an older layout or half built; returns how many blocks were indexed. Every index entry
        there is goes first, so a build cut short by a crash is simply redone on the next open."""
        tip = self.tip.height
        stale = WriteBatch()
        for prefix in (indexes.TX_INDEX, indexes.ACCOUNT_TXS, indexes.BLOCK_BY_HASH, indexes.META_EPOCH):
            for key in self._reading(self._backend.scan_keys(prefix, prefix_stop(prefix))):
                stale.delete(key)
                if len(stale.ops) >= REINDEX_BATCH_ENTRIES:
                    self._write_indexes(stale)
                    stale = WriteBatch()
        stale.delete(indexes.META_TXCOUNT)
        self._write_indexes(stale)
        epochs = Epochs()
        batch = WriteBatch()
        batch.put_all(Epochs.first_entries())
        for height in range(1, tip + 1):
            block = self.load_block(height)
            receipts = self.load_receipts(height)
            if block is None or receipts is None or len(receipts) != len(block.txs):
                raise StorageError(f"the database at {self.location} is corrupt: block {height} or its "
                                   f"receipts are missing or do not match, below the head {tip}")
            epoch, meta, epochs = epochs.place(height, len(block.txs))
            batch.put_all(meta)
            indexes.index_block(batch, block, epoch, [canonical_json_trusted(r) for r in receipts])
            if len(batch.ops) >= REINDEX_BATCH_ENTRIES:
                self._write_indexes(batch)
                batch = WriteBatch()
                if progress is not None:
                    progress(height, tip)
        batch.put(META_INDEXES, INDEXES_VERSION)
        self._write_indexes(batch)
        self._epochs = epochs
        return tip

    def _write_indexes(self, batch: WriteBatch) -> None:
        try:
            self._backend.write(batch, sync=True)
        except DiskError as exc:
            raise StorageError(f"cannot write the block indexes to {self.location}: {exc}") from exc

    def close(self) -> None:
        if not self._backend.closed:
            self.state.close()
            self._backend.close()

    @property
    def closed(self) -> bool:
        return self._backend.closed

    # --- committing -------------------------------------------------------------------------

    def save_block(self, block: Block, certificate: Mapping[str, Any], execution: Execution) -> ChainTip:
        """Store a committed block with everything it implies in one synced atomic batch.

        The head moves only once that batch is durable: after a StorageError it still names the
        previous block (and the node halts)."""
        tip = self.tip
        if block.height != tip.height + 1 or block.header.prev_hash != tip.block_hash:
            raise StorageError(
                f"refusing to store block {block.height} ({block.hash[:16]}): the stored chain ends at "
                f"height {tip.height} ({tip.block_hash[:16]})"
            )
        if len(execution.receipts) != len(block.txs) or execution.app_hash != block.header.app_hash:
            raise StorageError(f"refusing to store block {block.height}: its execution does not match it")
        new_tip = ChainTip(block.height, block.hash, block.header.timestamp, block.header.app_hash)
        height_bytes = block.height.to_bytes(8, "big")
        batch = WriteBatch()
        batch.put(BLOCK + height_bytes, block.encode())
        batch.put(CERTIFICATE + height_bytes, canonical_json_trusted(dict(certificate)))
        receipts = [r.encode() for r in execution.receipts]
        batch.put(RECEIPTS + height_bytes, b"[" + b",".join(receipts) + b"]")
        hashes = [bytes.fromhex(tx.hash) for tx in block.txs]
        batch.put(TX_HASHES + height_bytes, b"".join(hashes))
        epoch, meta, epochs = self._epochs.place(block.height, len(block.txs))
        batch.put_all(meta)
        indexes.index_block(batch, block, epoch, receipts, hashes)
        batch.put_all([(STATE + key, value) for key, value in execution.writes.items()])
        batch.put(META_TIP, _tip_json(new_tip))
        # Before the write: a write that fails may still have landed (a failed sync), and the state
        # view must never answer "absent" for a key the database holds, nor serve a cached value the
        # block may have replaced.
        self.state.written(execution.writes)
        try:
            self._backend.write(batch, sync=True)
        except DiskError as exc:
            raise StorageError(
                f"durable write of block {block.height} to {self.location} failed: {exc}"
            ) from exc
        self.tip = new_tip
        self._epochs = epochs
        return new_tip

    def save_engine(self, puts: Mapping[str, bytes], deletes: Sequence[str]) -> None:
        """Durably store consensus engine records (one synced batch)."""
        batch = WriteBatch()
        for name in deletes:
            batch.delete(ENGINE + name.encode("utf-8"))
        for name, value in puts.items():
            batch.put(ENGINE + name.encode("utf-8"), value)
        try:
            self._backend.write(batch, sync=True)
        except DiskError as exc:
            raise StorageError(
                f"durable write of consensus state to {self.location} failed: {exc}"
            ) from exc

    # --- loading ----------------------------------------------------------------------------

    def load_engine(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key, value in self._scan(ENGINE, prefix_stop(ENGINE)):
            out[key[len(ENGINE):].decode("utf-8")] = value
        return out

    def load_block_bytes(self, height: int) -> bytes | None:
        if height < 1:
            return None
        return self._get(height_key(BLOCK, height))

    def load_block(self, height: int) -> Block | None:
        raw = self.load_block_bytes(height)
        if raw is None:
            return None
        try:
            return decode_block(raw)
        except Rejected as exc:
            raise StorageError(
                f"the database at {self.location} is corrupt: block {height}: {exc.message}"
            ) from exc

    def load_block_json(self, height: int) -> dict[str, Any] | None:
        """The stored block as parsed JSON ({"header", "txs"}), without re-validating or re-hashing it:
        for serving reads, where decoding thousands of transactions would stall the node."""
        raw = self.load_block_bytes(height)
        if raw is None:
            return None
        obj: dict[str, Any] = json.loads(raw)
        return obj

    def load_tx_hashes(self, height: int) -> list[str] | None:
        raw = self._get(height_key(TX_HASHES, height))
        if raw is None:
            return None
        return [raw[i:i + 32].hex() for i in range(0, len(raw), 32)]

    def load_blocks(self, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """(height, block bytes) for start <= height < stop, in height order (for block sync)."""
        start = max(start, 1)
        if stop <= start:
            return
        for key, value in self._scan(height_key(BLOCK, start), height_key(BLOCK, stop)):
            yield int.from_bytes(key[1:], "big"), value

    def load_certificate(self, height: int) -> dict[str, Any] | None:
        raw = self._get(height_key(CERTIFICATE, height))
        if raw is None:
            return None
        cert: dict[str, Any] = json.loads(raw)
        return cert

    def load_receipts(self, height: int) -> list[dict[str, Any]] | None:
        raw = self._get(height_key(RECEIPTS, height))
        if raw is None:
            return None
        receipts: list[dict[str, Any]] = json.loads(raw)
        return receipts

    def load_tx_location(self, tx_hash: str) -> tuple[int, int] | None:
        """(height, index) of a committed transaction, or None."""
        raw = indexes.find_tx(self._get, self._epochs, tx_hash)
        if raw is None:
            return None
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:12], "big")

    def load_tx(self, tx_hash: str, height: int | None = None) -> tuple[int, int, dict[str, Any]] | None:
        """(height, index, receipt) of a committed transaction, or None; `height`, when the caller
        knows where the transaction is, saves looking for it in the older epochs."""
        raw = indexes.find_tx(self._get, self._epochs, tx_hash, height)
        if raw is None:
            return None
        receipt: dict[str, Any] = json.loads(raw[12:])
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:12], "big"), receipt

    def has_tx(self, tx_hash: str) -> bool:
        return indexes.find_tx(self._get, self._epochs, tx_hash) is not None

    def recently_committed(self, tx_hash: str) -> bool:
        """Whether the transaction is in the newest `RECENT_EPOCHS` epochs of the chain (its last
        half million transactions or more): a bounded lookup, for admission to tell a replay from a
        used nonce without letting anyone make it read every epoch of a long chain."""
        return indexes.find_tx(self._get, self._epochs, tx_hash, newest=RECENT_EPOCHS) is not None

    # --- explorer indexes -------------------------------------------------------------------

    def height_of_block(self, block_hash: str) -> int | None:
        """The height of the committed block with this hash, or None."""
        raw = self._get(indexes.BLOCK_BY_HASH + bytes.fromhex(block_hash))
        return None if raw is None else int.from_bytes(raw, "big")

    def account_txs(self, address: str, after: tuple[int, int] | None, limit: int
                    ) -> list[tuple[int, int, str, str, str]]:
        """Up to `limit` (height, index, tx hash, sender, type) of the transactions involving
        `address`, newest first, starting below the (height, index) `after` when given."""
        return indexes.account_entries(self._scan, self._epochs, address, after, limit)

    def owner_records(self, owner: str, after: str | None, limit: int) -> list[tuple[str, bytes]]:
        """Up to `limit` (key, stored record) of `owner`'s records in key byte order, after `after`."""
        prefix = STATE + RECORD_STATE + bytes.fromhex(owner)
        start = prefix if after is None else prefix + after.encode("utf-8") + b"\x00"
        out: list[tuple[str, bytes]] = []
        if limit < 1:
            return out
        scan = self._scan(start, prefix_stop(prefix))
        try:
            for key, value in scan:
                out.append((key[len(prefix):].decode("utf-8", "replace"), value))
                if len(out) >= limit:
                    break
        finally:
            scan.close()
        return out
