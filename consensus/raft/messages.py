"""Raft wire messages and their strict binary encoding.

Every message is::

    b"RAFT" | version u8 (=1) | kind u8 | len(chain_id) u8 | chain_id (ASCII) | sender (32) | term u64
    | body

Integers are unsigned big-endian; node ids and hashes travel as 32 raw bytes; a term that the
sender does not know (a log base reached by block sync) is `UNKNOWN_TERM` on the wire and `None`
here. Blocks inside AppendEntries are their canonical bytes (`Block.encode()`, cached by the
block), length-prefixed, so a leader assembles each follower's frame by concatenation and never
re-encodes a block. Decoding accepts exactly one well-formed message and nothing trailing; any
deviation raises `MalformedMessage`, which the engine counts and drops.

The p2p layer authenticates the peer; the `sender` field must name that same peer (the engine
drops the message otherwise). It is there so that a message says on its own who sent it: a log of
Raft traffic, or the simulator's equivocation checker, can attribute every vote and every entry.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.block import Block, decode_block
from ledger.errors import Rejected
from ledger.tx import DecodeMemo

MAGIC = b"RAFT"
VERSION = 1
UNKNOWN_TERM = 2**64 - 1
MAX_TERM = 2**63  # terms at or above this are refused: they could only come from a bug or garbage
MAX_SIGNATURE_BYTES = 255  # length-prefixed with one byte (Ed25519 needs 64)

REQUEST_VOTE, VOTE_RESPONSE, APPEND_ENTRIES, APPEND_RESPONSE, SYNC_HINT = 1, 2, 3, 4, 5
PRE_VOTE, PRE_VOTE_RESPONSE = 6, 7

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class MalformedMessage(Exception):
    """Bytes from a peer that are not one well-formed Raft message."""


class WrongChain(MalformedMessage):
    """A well-framed message for another chain (a misconfigured peer, not garbage)."""


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A candidate asks for a vote (Raft §5.2). `commit` is the candidate's committed height: a
    voter whose whole log lies at or below it may vote even without comparing terms (see engine).

    `pre`: the Pre-Vote phase (dissertation §9.6): "would you vote for me in `term`?", asked
    before a node increments its term; answering changes nothing on either side."""

    sender: str
    term: int
    last_index: int
    last_term: int | None
    commit: int
    pre: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    sender: str
    term: int
    candidate: str  # whom this answers: a vote is for one candidate in one term
    granted: bool
    pre: bool = False  # an answer to a pre-vote: no vote was cast


@dataclass(frozen=True, slots=True)
class CommitSignature:
    """The leader `leader` of term `term` declared the entry at `index` committed."""

    index: int
    term: int
    leader: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class WireEntry:
    term: int
    block: Block


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Raft §5.3, with `prev_hash` so a follower can match a committed prefix it holds only as a
    block hash, and `certs` carrying the leader's commit signatures for the follower's Commit."""

    sender: str
    term: int
    prev_index: int
    prev_term: int | None
    prev_hash: str
    commit: int
    entries: tuple[WireEntry, ...]
    certs: tuple[CommitSignature, ...]


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """`success`: the follower's log matches the leader's up to `index`. Otherwise `index` is the
    prev_index it could not match and `hint` the highest index the leader should try next."""

    sender: str
    term: int
    success: bool
    index: int
    hint: int
    commit: int


@dataclass(frozen=True, slots=True)
class SyncHint:
    """InstallSnapshot's stand-in: the leader no longer holds the entries this follower needs, so
    the follower must fetch committed blocks up to at least `height` by block sync."""

    sender: str
    term: int
    height: int
    block_hash: str


Message = RequestVote | VoteResponse | AppendEntries | AppendResponse | SyncHint


def _term_out(term: int | None) -> bytes:
    return _U64.pack(UNKNOWN_TERM if term is None else term)


def _header(kind: int, chain_id: str, sender: str, term: int) -> bytes:
    cid = chain_id.encode("ascii")
    return MAGIC + bytes((VERSION, kind, len(cid))) + cid + bytes.fromhex(sender) + _U64.pack(term)


def encode_request_vote(chain_id: str, m: RequestVote) -> bytes:
    kind = PRE_VOTE if m.pre else REQUEST_VOTE
    return _header(kind, chain_id, m.sender, m.term) + _U64.pack(m.last_index) + _term_out(m.last_term) \
        + _U64.pack(m.commit)


def encode_vote_response(chain_id: str, m: VoteResponse) -> bytes:
    return _header(PRE_VOTE_RESPONSE if m.pre else VOTE_RESPONSE, chain_id, m.sender, m.term) \
        + bytes.fromhex(m.candidate) + bytes((1 if m.granted else 0,))


def encode_append_response(chain_id: str, m: AppendResponse) -> bytes:
    return _header(APPEND_RESPONSE, chain_id, m.sender, m.term) + bytes((1 if m.success else 0,)) \
        + _U64.pack(m.index) + _U64.pack(m.hint) + _U64.pack(m.commit)


def encode_sync_hint(chain_id: str, m: SyncHint) -> bytes:
    return _header(SYNC_HINT, chain_id, m.sender, m.term) + _U64.pack(m.height) + bytes.fromhex(m.block_hash)


def encode_append_entries(
    chain_id: str, sender: str, term: int, prev_index: int, prev_term: int | None, prev_hash: str,
    commit: int, entries: Sequence[tuple[int, bytes]], certs: Sequence[CommitSignature],
) -> bytes:
    """`entries` are (term, block bytes): the caller passes each block's cached encoding."""
    parts = [_header(APPEND_ENTRIES, chain_id, sender, term), _U64.pack(prev_index), _term_out(prev_term),
             bytes.fromhex(prev_hash), _U64.pack(commit), _U32.pack(len(entries))]
    for entry_term, data in entries:
        parts += (_U64.pack(entry_term), _U32.pack(len(data)), data)
    parts.append(_U32.pack(len(certs)))
    for c in certs:
        if not 1 <= len(c.signature) <= MAX_SIGNATURE_BYTES:
            raise ValueError(f"a commit signature must be 1..{MAX_SIGNATURE_BYTES} bytes")
        parts += (_U64.pack(c.index), _U64.pack(c.term), bytes.fromhex(c.leader), bytes((len(c.signature),)),
                  c.signature)
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedMessage("message is truncated")
        out = bytes(self._data[self._pos:end])
        self._pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise MalformedMessage("a boolean must be 0 or 1")
        return value == 1

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def term(self) -> int:
        value = self.u64()
        if value >= MAX_TERM:
            raise MalformedMessage("term is out of range")
        return value

    def term_or_unknown(self) -> int | None:
        value = self.u64()
        if value == UNKNOWN_TERM:
            return None
        if value >= MAX_TERM:
            raise MalformedMessage("term is out of range")
        return value

    def hex32(self) -> str:
        return self.take(32).hex()

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MalformedMessage("trailing bytes after the message")


def decode_message(
    data: bytes, chain_id: str | None, max_items: int, max_block_bytes: int, memo: DecodeMemo | None = None
) -> Message:
    """Decode one message for `chain_id`; raises MalformedMessage (or WrongChain) on anything else.

    `max_items` bounds entries and certificates per AppendEntries; `max_block_bytes` each block.
    `chain_id` None accepts any chain: for tools that inspect traffic, never for an engine. `memo`
    answers the transactions of entries that were decoded before (met first in gossip).
    """
    r = _Reader(data)
    if r.take(4) != MAGIC:
        raise MalformedMessage("not a Raft message")
    if r.u8() != VERSION:
        raise MalformedMessage("unknown Raft message version")
    kind = r.u8()
    try:
        their_chain = r.take(r.u8()).decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("chain_id is not ASCII") from exc
    if chain_id is not None and their_chain != chain_id:
        raise WrongChain(their_chain)
    sender, term = r.hex32(), r.term()
    msg: Message
    if kind in (REQUEST_VOTE, PRE_VOTE):
        msg = RequestVote(sender, term, r.u64(), r.term_or_unknown(), r.u64(), kind == PRE_VOTE)
    elif kind in (VOTE_RESPONSE, PRE_VOTE_RESPONSE):
        msg = VoteResponse(sender, term, r.hex32(), r.flag(), kind == PRE_VOTE_RESPONSE)
    elif kind == APPEND_RESPONSE:
        msg = AppendResponse(sender, term, r.flag(), r.u64(), r.u64(), r.u64())
    elif kind == SYNC_HINT:
        msg = SyncHint(sender, term, r.u64(), r.hex32())
    elif kind == APPEND_ENTRIES:
        msg = _decode_append(r, sender, term, max_items, max_block_bytes, memo)
    else:
        raise MalformedMessage(f"unknown Raft message kind {kind}")
    r.end()
    return msg


def _decode_append(r: _Reader, sender: str, term: int, max_items: int, max_block_bytes: int,
                   memo: DecodeMemo | None) -> AppendEntries:
    prev_index, prev_term, prev_hash, commit = r.u64(), r.term_or_unknown(), r.hex32(), r.u64()
    count = r.u32()
    if count > max_items:
        raise MalformedMessage(f"more than {max_items} entries")
    entries = []
    for _ in range(count):
        entry_term = r.term()
        size = r.u32()
        if size > max_block_bytes:
            raise MalformedMessage(f"a block larger than {max_block_bytes} bytes")
        try:
            block = decode_block(r.take(size), memo=memo)
        except Rejected as exc:
            raise MalformedMessage(f"bad block in entry: {exc.message}") from exc
        entries.append(WireEntry(entry_term, block))
    count = r.u32()
    if count > max_items:
        raise MalformedMessage(f"more than {max_items} commit signatures")
    certs = []
    for _ in range(count):
        index, cert_term, leader, size = r.u64(), r.term(), r.hex32(), r.u8()
        if size == 0:
            raise MalformedMessage("an empty commit signature")
        certs.append(CommitSignature(index, cert_term, leader, r.take(size)))
    return AppendEntries(sender, term, prev_index, prev_term, prev_hash, commit, tuple(entries), tuple(certs))
