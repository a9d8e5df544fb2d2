"""Which committed state keys exist, kept in memory, so that reading a key that is not there (the
account of a transfer's new recipient, a record about to be written for the first time) does not
ask LevelDB.

Why not just ask: LevelDB counts a read that looks in more than one table file as a wasted seek
against the first file, and after about a hundred of them (a file's size / 16 KiB) it compacts
that file into the next level early, whether or not that level needs it. A key that is nowhere
is looked for in every level, so every such read is charged, even when each level's Bloom filter
answers without reading a block. On a chain whose transfers keep creating accounts these
early compactions grew with the database: replaying a node's writes for 2 million transfers with
one read of an absent account each, LevelDB's background thread rose from 23 to 60 µs a
transaction; without the reads it stayed at 14.

`PresenceFilter` is a Bloom filter over the state keys (3 probes from Python's per-process
`hash` of the key, Kirsch-Mitzenmacher style). It may say a key is there when it is not (about
0.5% of absent keys at 16 bits a key: those are read as before), never the reverse: every key the
store holds is added before the filter is used, and every key a block writes is added as the
block is stored. `PresenceBuild` fills a filter from the stored keys a slice at a time, so that
a node with millions of accounts starts serving at once and the runtime fills it between events.
"""

from __future__ import annotations

from collections.abc import Iterator

# 8 MiB: 16 bits a key up to 4 million state keys. Past that the share of absent keys still read
# from LevelDB grows (about 3% at 8 million, 15% at 16 million); the answers stay exact.
DEFAULT_BITS_LOG2 = 26
MAX_BITS_LOG2 = 32


class PresenceFilter:
    """A Bloom filter of byte keys: `add`, `may_contain`."""

    __slots__ = ("_bits", "_mask")

    def __init__(self, bits_log2: int = DEFAULT_BITS_LOG2) -> None:
        if not 3 <= bits_log2 <= MAX_BITS_LOG2:
            raise ValueError(f"bits_log2 must be 3..{MAX_BITS_LOG2}, not {bits_log2}")
        self._bits = bytearray(1 << (bits_log2 - 3))
        self._mask = (1 << bits_log2) - 1

    def _probes(self, key: bytes) -> tuple[int, int, int]:
        """The three bit positions of `key`: `add` and `may_contain` must agree on them exactly (a
        difference would answer "absent" for a key that exists), so they are computed here only."""
        h = hash(key)
        mask = self._mask
        step = (h >> 32) | 1
        a = h & mask
        b = (a + step) & mask
        return a, b, (b + step) & mask

    def add(self, key: bytes) -> None:
        bits = self._bits
        for a in self._probes(key):
            bits[a >> 3] |= 1 << (a & 7)

    def may_contain(self, key: bytes) -> bool:
        bits = self._bits
        a, b, c = self._probes(key)
        return bool(bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7))
                    and bits[c >> 3] & (1 << (c & 7)))


class PresenceBuild:
    """Adds the keys `stored` yields (the store's keys when the build began, read from a snapshot)
    to `into`, at most `max_keys` a `step`; `complete` once they are all in. The caller adds every
    key written after the snapshot was taken (before it, too: adding twice is harmless)."""

    def __init__(self, into: PresenceFilter, stored: Iterator[bytes]) -> None:
        self._into = into
        self._stored: Iterator[bytes] | None = stored
        self.added = 0
        self.complete = False

    def step(self, max_keys: int | None = None) -> bool:
        """Add up to `max_keys` more stored keys (None: all of them); True once all are in. Whatever
        reading the stored keys raises is raised here, and the build is then abandoned."""
        stored = self._stored
        if stored is None:
            return self.complete
        add = self._into.add
        taken = 0
        try:
            for key in stored:
                add(key)
                taken += 1
                if max_keys is not None and taken >= max_keys:
                    self.added += taken
                    return False
        except BaseException:
            self.cancel()
            raise
        self.added += taken
        self._stored = None
        self.complete = True
        return True

    def cancel(self) -> None:
        """Stop building (closing the snapshot's iterator); an abandoned build never completes."""
        stored, self._stored = self._stored, None
        close = getattr(stored, "close", None)
        if close is not None:
            close()
