"""The storage interface `Store` is written against: an ordered byte key-value store with atomic batches.

It is exactly what `Store` needs and no more, so that a second implementation (the in-memory disk
of `storage.memory`) can keep the same promises as LevelDB without modelling LevelDB itself:

- `get(key)`: the value, or None;
- `scan(start, stop)`: (key, value) for start <= key < stop in byte order, read from the state as it
  was when iteration began (a LevelDB iterator reads an implicit snapshot); `scan_keys(start,
  stop)` the same keys without their values;
- `write(batch, sync=...)`: the batch's puts and deletes, in order, all or none; with sync=True the
  batch, and every write before it, is durable when `write` returns;
- `close()`, `closed`, and `location` (where the data lives, for messages).

A failed operation raises `DiskError` and nothing else; opening raises `StorageError` with an
operator's message (a backend's constructor or `open` does that).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class WriteBatch:
    """Puts and deletes to apply together, in order: all of them or none."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        # A None value is a delete; one list keeps puts and deletes of the same key in their order.
        self.ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((key, value))

    def put_all(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """`put` of every (key, value) in `items`, in order (a block's entries in one call)."""
        self.ops.extend(items)

    def delete(self, key: bytes) -> None:
        self.ops.append((key, None))


class KeyValueStore(Protocol):
    """One open database handle (see the module docstring for the promises)."""

    @property
    def location(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]: ...

    def scan_keys(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[bytes]: ...

    def write(self, batch: WriteBatch, *, sync: bool) -> None: ...

    def close(self) -> None: ...


def prefix_stop(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with `prefix` (None: no such key, scan to the end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
