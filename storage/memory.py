"""An in-memory disk that models durability, and the backend that opens it (for simulation and tests).

What it models is the contract `Store` relies on, not LevelDB's internals:

- Every write is appended, as one record, to a log of batches that are not yet durable; the
  process reads them at once. A write with sync=True makes itself and every record before it
  durable (LevelDB has one log, and syncing it syncs everything appended before).
- `MemoryDisk.crash(survivors)` is a power loss: the open handle dies, and of the records not yet
  durable only the first `survivors` (whole records, in order) are kept; by default none. A
  simulator picks `survivors` from its own seeded `random.Random`; nothing here is random.
- A clean `close()` loses nothing: unsynced records stay in the log for the next handle.
- Faults are armed by the caller through `MemoryDisk.faults` (`DiskFaults`):
  a failed write reaches nothing, not even the log; a failed sync leaves its record in the log
  but unread by this handle, and the handle refuses every later write (LevelDB does the same,
  since such a record may or may not be there after a restart); reads of keys under a failing
  prefix raise. Every failure raises `DiskError`, like the plyvel backend's.
- One handle at a time: opening a disk that is open raises `StorageError` (LevelDB's lock file).

No clock, no module-level state: a test or simulator holds as many disks as it has nodes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from storage.backend import WriteBatch
from storage.errors import DiskError, StorageError

_Record = tuple[tuple[bytes, bytes | None], ...]


@dataclass
class DiskFaults:
    """Faults the caller arms on a `MemoryDisk`; each counter fires on that many next operations."""

    fail_writes: int = 0
    """The next N writes (synced or not) fail before reaching the log: nothing of them is kept."""
    fail_syncs: int = 0
    """The next N writes with sync=True reach the log but their sync fails."""
    failing_read_prefixes: set[bytes] = field(default_factory=set)
    """Reads of any key under one of these prefixes fail, until the prefix is removed."""

    def read_fails(self, key: bytes) -> bool:
        return any(key.startswith(prefix) for prefix in self.failing_read_prefixes)


class MemoryDisk:
    """The durable and not-yet-durable contents of one node's database; it outlives the handles."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.faults = DiskFaults()
        self._durable: dict[bytes, bytes] = {}
        self._log: list[_Record] = []  # appended, not yet durable, oldest first
        # What the open handle reads: durable, then the log, less records whose sync failed while
        # this handle was open. Its keys are kept sorted for scans.
        self._view: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._epoch = 0  # bumped by every open and every crash: a handle from another epoch is dead
        self._open = False

    @property
    def unsynced_records(self) -> int:
        """How many written records a crash now could lose (the range of `crash(survivors)`)."""
        return len(self._log)

    def durable_items(self) -> dict[bytes, bytes]:
        """A copy of what a crash now would keep at least (for checks)."""
        return dict(self._durable)

    def crash(self, survivors: int = 0) -> None:
        """Power loss: the open handle (if any) dies; unsynced records after the first `survivors` are lost."""
        if not 0 <= survivors <= len(self._log):
            raise ValueError(f"survivors must be in 0..{len(self._log)}, not {survivors}")
        for record in self._log[:survivors]:
            _apply(self._durable, record)
        self._log.clear()
        self._open = False
        self._epoch += 1
        self._view, self._keys = {}, []

    # --- used by MemoryBackend ---------------------------------------------------------------

    def _acquire(self) -> int:
        if self._open:
            raise StorageError(f"the database at {self.name} is in use by another handle")
        self._open = True
        self._epoch += 1
        # A restart reads every record the log holds, a record whose sync failed included.
        self._view = dict(self._durable)
        for record in self._log:
            _apply(self._view, record)
        self._keys = sorted(self._view)
        return self._epoch

    def _release(self, epoch: int) -> None:
        if self._open and epoch == self._epoch:
            self._open = False

    def _live(self, epoch: int) -> bool:
        return self._open and epoch == self._epoch

    def _get(self, key: bytes) -> bytes | None:
        if self.faults.read_fails(key):
            raise DiskError(f"read error at key {key[:9].hex()} (injected)")
        return self._view.get(key)

    def _snapshot(self, start: bytes, stop: bytes | None) -> list[tuple[bytes, bytes]]:
        lo = bisect.bisect_left(self._keys, start)
        hi = len(self._keys) if stop is None else bisect.bisect_left(self._keys, stop)
        return [(k, self._view[k]) for k in self._keys[lo:hi]]

    def _write(self, batch: WriteBatch, sync: bool) -> None:
        """Returns normally when the record is written (and synced, if asked); raises DiskError when
        it is not, saying whether the record may still survive (see `MemoryBackend.write`)."""
        if self.faults.fail_writes > 0:
            self.faults.fail_writes -= 1
            raise DiskError("write error (injected): the batch was not written")
        record: _Record = tuple(batch.ops)
        self._log.append(record)
        if sync and self.faults.fail_syncs > 0:
            self.faults.fail_syncs -= 1
            raise _SyncFailed("sync error (injected): the batch may or may not survive a crash")
        for key, value in record:
            if value is None:
                if self._view.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._view:
                    bisect.insort(self._keys, key)
                self._view[key] = value
        if sync:
            for logged in self._log:
                _apply(self._durable, logged)
            self._log.clear()


class _SyncFailed(DiskError):
    """A sync failed after the record reached the log: its fate is decided by the next crash."""


class MemoryBackend:
    """An open handle on a `MemoryDisk` (a `storage.backend.KeyValueStore`)."""

    def __init__(self, disk: MemoryDisk) -> None:
        self._disk = disk
        self._epoch = disk._acquire()
        self._closed = False
        self._write_error: str | None = None

    @property
    def location(self) -> str:
        return self._disk.name

    @property
    def closed(self) -> bool:
        return self._closed or not self._disk._live(self._epoch)

    def _check_open(self) -> None:
        if self.closed:
            raise DiskError("the database is closed")

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._disk._get(key)

    def scan(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        faults = self._disk.faults
        for key, value in self._disk._snapshot(start, stop):
            if faults.read_fails(key):
                raise DiskError(f"read error at key {key[:9].hex()} (injected)")
            yield key, value

    def scan_keys(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[bytes]:
        for key, _ in self.scan(start, stop):
            yield key

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        self._check_open()
        if self._write_error is not None:
            raise DiskError(f"writes refused after an earlier failed sync: {self._write_error}")
        try:
            self._disk._write(batch, sync)
        except _SyncFailed as exc:
            self._write_error = str(exc)
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._disk._release(self._epoch)


def _apply(target: dict[bytes, bytes], record: _Record) -> None:
    for key, value in record:
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
