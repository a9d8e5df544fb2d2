"""The Raft log and the node's durable Raft records.

Log index == block height. The block store holds every committed block, so the log only keeps
entries above a *base*: the base is a committed height whose block hash is known and whose entry
term is known unless the node reached it by block sync (then `term is None`). Entries at or below
the committed height are kept for `RaftLimits.retained_entries` more blocks so that a leader can
repair slightly lagging followers, then deleted.

Records (engine-chosen keys, order-preserving zero padding for the log):

    raft/state                 {"term": T, "vote": node id | null}     (canonical JSON)
    raft/base                  {"hash": h, "index": i, "term": t | null}
    raft/log/0000000000000042  entry term (u64 big-endian) + block bytes

A restored record set that contradicts itself or the block store raises `RaftStateError`: that is
local corruption, and the node must halt rather than guess.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from consensus.api import ChainTip
from ledger import keys
from ledger.block import Block, decode_block
from ledger.encoding import canonical_json_trusted
from ledger.errors import Rejected

STATE_KEY = "raft/state"
BASE_KEY = "raft/base"
LOG_PREFIX = "raft/log/"

_U64 = struct.Struct(">Q")


class RaftStateError(Exception):
    """The node's persisted Raft records are inconsistent; the node must not run on them."""


class RaftInvariantError(Exception):
    """A rule the engine relies on was broken by its own code or its caller: halt, do not guess."""


def entry_key(index: int) -> str:
    return f"{LOG_PREFIX}{index:016d}"


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    block: Block

    @property
    def index(self) -> int:
        return self.block.height


@dataclass(frozen=True, slots=True)
class HardState:
    term: int
    vote: str | None


@dataclass(frozen=True, slots=True)
class Base:
    index: int
    term: int | None
    hash: str


def encode_entry(entry: Entry) -> bytes:
    return _U64.pack(entry.term) + entry.block.encode()


def decode_entry(raw: bytes) -> Entry:
    if len(raw) < 8:
        raise RaftStateError("a raft log record is truncated")
    try:
        block = decode_block(raw[8:])
    except Rejected as exc:
        raise RaftStateError(f"a raft log record holds a bad block: {exc.message}") from exc
    return Entry(int(_U64.unpack(raw[:8])[0]), block)


def encode_hard_state(state: HardState) -> bytes:
    return canonical_json_trusted({"term": state.term, "vote": state.vote})


def encode_base(base: Base) -> bytes:
    return canonical_json_trusted({"hash": base.hash, "index": base.index, "term": base.term})


def _load_json(raw: bytes, what: str) -> dict[str, object]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise RaftStateError(f"{what} is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise RaftStateError(f"{what} is not an object")
    return obj


def decode_hard_state(raw: bytes, validators: Collection[str] | None) -> HardState:
    """`validators` None: the vote may name any node id (a set that changes may have lost it since)."""
    obj = _load_json(raw, STATE_KEY)
    term, vote = obj.get("term"), obj.get("vote")
    if set(obj) != {"term", "vote"} or type(term) is not int or term < 0 \
            or not (vote is None or (isinstance(vote, str) and (
                vote in validators if validators is not None else keys.is_address(vote)))):
        raise RaftStateError(f"{STATE_KEY} is malformed or names a vote for a non-validator")
    return HardState(term, vote)


def decode_base(raw: bytes) -> Base:
    obj = _load_json(raw, BASE_KEY)
    index, term, block_hash = obj.get("index"), obj.get("term"), obj.get("hash")
    if set(obj) != {"hash", "index", "term"} or type(index) is not int or index < 0 \
            or not (term is None or (type(term) is int and term >= 0)) or not keys.is_address(block_hash):
        raise RaftStateError(f"{BASE_KEY} is malformed")
    assert isinstance(block_hash, str)
    return Base(index, term, block_hash)


class RaftLog:
    """Entries base.index+1 .. last_index, each chained to its predecessor by prev_hash."""

    def __init__(self, base: Base) -> None:
        self.base = base
        self._entries: list[Entry] = []

    @property
    def first_index(self) -> int:
        return self.base.index + 1

    @property
    def last_index(self) -> int:
        return self.base.index + len(self._entries)

    @property
    def last_term(self) -> int | None:
        return self._entries[-1].term if self._entries else self.base.term

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def has(self, index: int) -> bool:
        """True when the hash at `index` is known (the base or an entry)."""
        return self.base.index <= index <= self.last_index

    def entry(self, index: int) -> Entry:
        if not self.first_index <= index <= self.last_index:
            raise IndexError(f"raft log holds {self.first_index}..{self.last_index}, not {index}")
        return self._entries[index - self.first_index]

    def term_at(self, index: int) -> int | None:
        return self.base.term if index == self.base.index else self.entry(index).term

    def hash_at(self, index: int) -> str:
        return self.base.hash if index == self.base.index else self.entry(index).block.hash

    def slice(self, start: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries from `start` on, at most `max_count` and `max_bytes` (but at least one)."""
        out: list[Entry] = []
        size = 0
        for index in range(start, min(self.last_index, start + max_count - 1) + 1):
            entry = self.entry(index)
            size += len(entry.block.encode())
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def append(self, entry: Entry) -> None:
        last = self.last_index
        if entry.index != last + 1 or entry.block.header.prev_hash != self.hash_at(last):
            raise RaftInvariantError(f"raft log: entry {entry.index} does not extend the log at "
                                     f"{self.last_index}")
        last_term = self.last_term
        if last_term is not None and entry.term < last_term:
            raise RaftInvariantError(f"raft log: entry {entry.index} has term {entry.term} below {last_term}")
        self._entries.append(entry)

    def truncate_from(self, index: int) -> list[int]:
        """Remove entries `index`.. and return their indexes."""
        if index <= self.base.index:
            raise RaftInvariantError(f"raft log: cannot truncate at {index}, at or below the base "
                                     f"{self.base.index}")
        removed = list(range(index, self.last_index + 1))
        del self._entries[index - self.first_index:]
        return removed

    def compact_to(self, index: int) -> list[int]:
        """Make `index` the new base, dropping the entries at and below it; returns their indexes."""
        if index <= self.base.index:
            return []
        base = Base(index, self.term_at(index), self.hash_at(index))
        removed = list(range(self.first_index, index + 1))
        del self._entries[:index - self.base.index]
        self.base = base
        return removed

    def reset(self, base: Base) -> list[int]:
        """Drop every entry and start over from `base`; returns the dropped indexes."""
        removed = list(range(self.first_index, self.last_index + 1))
        self._entries.clear()
        self.base = base
        return removed


@dataclass
class Restored:
    hard_state: HardState
    log: RaftLog
    stale_keys: list[str]  # records to delete at the next Persist
    base_dirty: bool  # the base record must be (re)written at the next Persist


def restore(records: Mapping[str, bytes], tip: ChainTip, validators: Collection[str] | None) -> Restored:
    """Rebuild hard state and log from persisted records and the block store's tip."""
    unknown = [k for k in records if k not in (STATE_KEY, BASE_KEY) and not k.startswith(LOG_PREFIX)]
    if unknown:
        raise RaftStateError(f"unexpected engine records (another engine's state?): {sorted(unknown)[:3]}")
    hard = decode_hard_state(records[STATE_KEY], validators) if STATE_KEY in records else HardState(0, None)
    entries: list[Entry] = []
    for key in sorted(k for k in records if k.startswith(LOG_PREFIX)):
        entry = decode_entry(records[key])
        if key != entry_key(entry.index):
            raise RaftStateError(f"raft log record {key} holds the block of height {entry.index}")
        if entries and (entry.index != entries[-1].index + 1 or entry.term < entries[-1].term
                        or entry.block.header.prev_hash != entries[-1].block.hash):
            raise RaftStateError(f"raft log record {key} does not extend the entry before it")
        if entry.term > hard.term:
            raise RaftStateError(f"raft log record {key} has term {entry.term} above the current term "
                                 f"{hard.term}")
        entries.append(entry)

    if BASE_KEY in records:
        base = decode_base(records[BASE_KEY])
        base_dirty = False
    elif entries:
        raise RaftStateError("raft log records exist without the raft/base record")
    else:
        base = Base(tip.height, 0 if tip.height == 0 else None, tip.block_hash)
        base_dirty = True
    if entries and (entries[0].index != base.index + 1 or entries[0].block.header.prev_hash != base.hash):
        raise RaftStateError("the first raft log record does not extend raft/base")
    if base.index > tip.height:
        raise RaftStateError(f"raft/base is at height {base.index} but the block store ends at {tip.height}")

    log = RaftLog(base)
    for entry in entries:
        log.append(entry)
    stale: list[int] = []
    if tip.height == base.index:
        if base.hash != tip.block_hash:
            raise RaftStateError(f"raft/base and the block store disagree on block {tip.height}")
    elif tip.height > log.last_index or log.hash_at(tip.height) != tip.block_hash:
        # The block store moved past (or away from) the log by block sync and the node stopped
        # before the engine recorded it: the log up to there is superseded by committed blocks.
        stale = log.reset(Base(tip.height, None, tip.block_hash))
        base_dirty = True
    return Restored(hard, log, [entry_key(i) for i in stale], base_dirty)
