"""The production backend: one LevelDB directory through plyvel.

plyvel's defaults are unsafe for a ledger (writes are not synced, a batch is applied even when the
code building it raises), so every write passes `sync` and `transaction=True` explicitly.
plyvel reports a closed database with RuntimeError and engine failures with `plyvel.Error`; both
become `DiskError` here so that `Store` never sees a plyvel type.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel  # no type information: see [[tool.mypy.overrides]] in pyproject.toml

from storage.backend import WriteBatch
from storage.errors import DiskError, StorageError

# A Bloom filter per table (about 1% false positives at 10 bits a key): most reads of a key that
# is not there (a transfer to a new account, a governance flag never set) then touch no table
# file. Without it LevelDB reads an index and a block of every level that might hold the key,
# and on a long chain of transfers to fresh accounts those reads grew with the database. Tables
# written before have no filter and are read as before; compaction rewrites them with one.
BLOOM_FILTER_BITS = 10

# LevelDB's background compaction was a quarter of a validator's CPU under load (43% of a lone
# validator's), much of it in Snappy. The node's data is blocks, receipts and index entries that
# are written once and rarely read, so tables are stored uncompressed (more disk, less CPU), and
# a 16 MiB memtable (LevelDB's default is 4 MiB) absorbs the rewrites of hot keys (the senders'
# accounts, the head) before they reach a table and makes fewer, larger level-0 files. Measured
# with `./scripts/bench --validators 1 --max` (docs/benchmarks.md): node CPU per transaction
# 0.097 -> 0.072 ms.
COMPRESSION = None
WRITE_BUFFER_BYTES = 16 * 1024 * 1024


class PlyvelBackend:
    """An open LevelDB database; build it with `PlyvelBackend.open`."""

    def __init__(self, db: plyvel.DB, path: Path) -> None:
        self._db = db
        self._path = path

    @classmethod
    def open(cls, path: Path) -> PlyvelBackend:
        """Open (creating on first use) the LevelDB at `path`.

        Raises StorageError when the directory cannot be made, or the database is locked by another
        handle, unreadable or corrupt."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the data directory {path}: {exc.strerror}") from exc
        try:
            db = plyvel.DB(str(path), create_if_missing=True, bloom_filter_bits=BLOOM_FILTER_BITS,
                          compression=COMPRESSION, write_buffer_size=WRITE_BUFFER_BYTES)
        except plyvel.IOError as exc:
            text = error_text(exc)
            if "lock" in text.lower():
                raise StorageError(
                    f"the database at {path} is in use by another process (is another node running with "
                    f"this home?): {text}"
                ) from exc
            raise StorageError(f"cannot open the database at {path}: {text}") from exc
        except plyvel.CorruptionError as exc:
            raise StorageError(f"the database at {path} is corrupt: {error_text(exc)}") from exc
        except plyvel.Error as exc:
            raise StorageError(f"cannot open the database at {path}: {error_text(exc)}") from exc
        return cls(db, path)

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except (plyvel.Error, RuntimeError) as exc:
            raise DiskError(error_text(exc)) from exc
        return value

    def scan(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        try:
            with self._db.iterator(start=start or None, stop=stop) as it:
                yield from it
        except (plyvel.Error, RuntimeError) as exc:
            raise DiskError(error_text(exc)) from exc

    def scan_keys(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[bytes]:
        try:
            with self._db.iterator(start=start or None, stop=stop, include_value=False) as it:
                yield from it
        except (plyvel.Error, RuntimeError) as exc:
            raise DiskError(error_text(exc)) from exc

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        try:
            # transaction=True: if anything below raises, plyvel discards the batch instead of writing
            # the part built so far.
            with self._db.write_batch(transaction=True, sync=sync) as wb:
                for key, value in batch.ops:
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
        except (plyvel.Error, RuntimeError) as exc:
            raise DiskError(error_text(exc)) from exc

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()


def error_text(exc: BaseException) -> str:
    """plyvel puts LevelDB's status text in args[0] as bytes."""
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    return str(arg)
