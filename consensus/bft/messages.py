"""BFT wire messages: a strict binary framing, the bytes each signature covers, encode and decode.

Every message is one frame (integers big-endian):

    magic "LBF1" | kind u8 | chain_id_len u8 | chain_id | height u64 | round u32 | author u16
    | digest 32 | prepared_round u32 | sig_len u8 | signature
    | vote_count u16 | vote* | claim_count u16 | claim* | block_len u32 | block bytes

    vote  = author u16 | sig_len u8 | signature
    claim = author u16 | prepared_round u32 | digest 32 | sig_len u8 | signature

`author` is an index into the genesis validator list. `digest` is a block hash (for a ROUND-CHANGE,
the hash of the block the sender has prepared, or zeros). `prepared_round` is meaningful for a
ROUND-CHANGE only and is 0xFFFFFFFF ("none") everywhere else.

The signature covers `signing_bytes`: a domain prefix, the kind, chain_id, height, round, digest
and, for a ROUND-CHANGE, prepared_round. The attachments (votes, claims, block) are not signed by
the sender: each is verifiable on its own (a vote or claim carries its own author's signature, a
block must hash to the signed digest). A block travels as `Block.encode()` bytes, framed once per
broadcast and decoded only if the receiver does not already hold a block with that hash.

Which attachments a kind may carry:
    PROPOSAL      block; for round > 0 the round-change claims that justify it and, when one of
                  them reports a prepared block, the prepared certificate (PREPARE votes)
    PREPARE       nothing
    COMMIT        nothing; its signature is the commit seal
    ROUND_CHANGE  when the sender has prepared: the prepared certificate and the prepared block
    DECIDED       the commit seals (COMMIT signatures of the round in `round`) and the block; a
                  reply to a peer still working on a height this node has already committed

Decoding never raises anything but `DecodeError` and checks every length before reading it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from consensus.api import Signer

MAGIC = b"LBF1"
DOMAIN = b"ledgerd-bft-v1:"
NO_ROUND = 0xFFFF_FFFF
ZERO_DIGEST = "0" * 64
MAX_SIGNATURE_BYTES = 255
_CHAIN_ID_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = frozenset("0123456789abcdef")


class Kind(IntEnum):
    PROPOSAL = 1
    PREPARE = 2
    COMMIT = 3
    ROUND_CHANGE = 4
    DECIDED = 5


class DecodeError(Exception):
    """The bytes are not a well-formed BFT message; `reason` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Vote:
    """One validator's signature over (kind, height, round, digest) implied by where it appears."""

    author: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """The signed part of a ROUND-CHANGE, as carried inside a proposal's justification."""

    author: int
    prepared_round: int  # -1: nothing prepared
    prepared_hash: str  # ZERO_DIGEST when nothing prepared
    signature: bytes


@dataclass(frozen=True, slots=True, eq=False)
class Message:
    kind: Kind
    chain_id: str
    height: int
    round: int
    author: int
    digest: str  # lowercase hex, 64 characters
    signature: bytes
    prepared_round: int = -1  # ROUND_CHANGE only; -1 when nothing is prepared
    votes: tuple[Vote, ...] = ()
    claims: tuple[Claim, ...] = ()
    block_bytes: bytes = b""

    def signing_bytes(self) -> bytes:
        return signing_bytes(self.chain_id, self.kind, self.height, self.round, self.digest,
                             self.prepared_round)

    def claim(self) -> Claim:
        """This ROUND-CHANGE as a claim to embed in a proposal's justification."""
        return Claim(self.author, self.prepared_round, self.digest, self.signature)

    def identity(self) -> tuple[int, int, int, int, str, int]:
        """What the signature binds, plus the author: equal identities are duplicates."""
        return (self.kind, self.height, self.round, self.author, self.digest, self.prepared_round)


def signing_bytes(
    chain_id: str, kind: int, height: int, round: int, digest: str, prepared_round: int = -1,
) -> bytes:
    """The bytes a validator signs for a message of `kind`. A COMMIT's signature is its commit seal."""
    chain = chain_id.encode("ascii")
    tail = b""
    if kind == Kind.ROUND_CHANGE:
        tail = (NO_ROUND if prepared_round < 0 else prepared_round).to_bytes(4, "big")
    return b"".join((
        DOMAIN, bytes((kind, len(chain))), chain, height.to_bytes(8, "big"), round.to_bytes(4, "big"),
        bytes.fromhex(digest), tail,
    ))


def sign(
    signer: Signer, chain_id: str, kind: Kind, height: int, round: int, author: int, digest: str,
    prepared_round: int = -1, votes: tuple[Vote, ...] = (), claims: tuple[Claim, ...] = (),
    block_bytes: bytes = b"",
) -> Message:
    """Build a message and sign it with `signer` (who must be validator number `author`)."""
    signature = signer.sign(signing_bytes(chain_id, kind, height, round, digest, prepared_round))
    return Message(kind, chain_id, height, round, author, digest, signature, prepared_round, votes, claims,
                   block_bytes)


def _sig(signature: bytes) -> bytes:
    if not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
        raise ValueError(f"a signature must be 1 to {MAX_SIGNATURE_BYTES} bytes")
    return bytes((len(signature),)) + signature


def encode(msg: Message) -> bytes:
    chain = msg.chain_id.encode("ascii")
    parts = [
        MAGIC, bytes((msg.kind, len(chain))), chain, msg.height.to_bytes(8, "big"),
        msg.round.to_bytes(4, "big"), msg.author.to_bytes(2, "big"), bytes.fromhex(msg.digest),
        (NO_ROUND if msg.prepared_round < 0 else msg.prepared_round).to_bytes(4, "big"), _sig(msg.signature),
        len(msg.votes).to_bytes(2, "big"),
    ]
    for vote in msg.votes:
        parts.append(vote.author.to_bytes(2, "big") + _sig(vote.signature))
    parts.append(len(msg.claims).to_bytes(2, "big"))
    for claim in msg.claims:
        pr = NO_ROUND if claim.prepared_round < 0 else claim.prepared_round
        parts.append(claim.author.to_bytes(2, "big") + pr.to_bytes(4, "big")
                     + bytes.fromhex(claim.prepared_hash) + _sig(claim.signature))
    parts.append(len(msg.block_bytes).to_bytes(4, "big"))
    parts.append(msg.block_bytes)
    return b"".join(parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError("truncated")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def round(self) -> int:
        """A u32 prepared-round field: -1 for none."""
        value = self.uint(4)
        return -1 if value == NO_ROUND else value

    def signature(self) -> bytes:
        length = self.uint(1)
        if length == 0:
            raise DecodeError("empty signature")
        return self.take(length)


def decode(data: bytes, max_votes: int = 1024) -> Message:
    """Parse one frame strictly: every field in range, nothing left over, attachments fit the kind."""
    r = _Reader(data)
    if r.take(4) != MAGIC:
        raise DecodeError("bad magic")
    try:
        kind = Kind(r.uint(1))
    except ValueError:
        raise DecodeError("unknown kind") from None
    chain = r.take(r.uint(1))
    if not _CHAIN_ID_RE.fullmatch(chain):
        raise DecodeError("malformed chain id")
    height = r.uint(8)
    round = r.uint(4)
    if round == NO_ROUND:
        raise DecodeError("round out of range")
    author = r.uint(2)
    digest = r.take(32).hex()
    prepared_round = r.round()
    signature = r.signature()
    votes = []
    count = r.uint(2)
    if count > max_votes:
        raise DecodeError("too many votes")
    for _ in range(count):
        votes.append(Vote(r.uint(2), r.signature()))
    claims = []
    count = r.uint(2)
    if count > max_votes:
        raise DecodeError("too many claims")
    for _ in range(count):
        claims.append(Claim(r.uint(2), r.round(), r.take(32).hex(), r.signature()))
    block_bytes = r.take(r.uint(4))
    if r.pos != len(data):
        raise DecodeError("trailing bytes")
    msg = Message(kind, chain.decode("ascii"), height, round, author, digest, signature, prepared_round,
                  tuple(votes), tuple(claims), block_bytes)
    _check_shape(msg)
    return msg


_NO_BLOCK = frozenset((Kind.PREPARE, Kind.COMMIT))


def carried_block(data: bytes) -> tuple[int, bytes] | None:
    """(height, block bytes) of a frame that carries a block (a proposal, a round change with its
    prepared block, a decided block), or None for any other frame or one that does not decode.
    Checks nothing else: what the node's runtime uses to start checking a block's transaction
    signatures off its event loop before the engine sees the message (`node.prefetch`)."""
    if len(data) <= len(MAGIC) or data[len(MAGIC)] in _NO_BLOCK:
        return None  # most frames are votes: not decoded twice
    try:
        msg = decode(data)
    except DecodeError:
        return None
    return (msg.height, msg.block_bytes) if msg.block_bytes else None


def _check_shape(msg: Message) -> None:
    kind = msg.kind
    if kind != Kind.ROUND_CHANGE and msg.prepared_round != -1:
        raise DecodeError("prepared_round on a message that is not a round change")
    if kind in (Kind.PREPARE, Kind.COMMIT):
        if msg.votes or msg.claims or msg.block_bytes:
            raise DecodeError("a vote carries no attachments")
    elif kind == Kind.PROPOSAL:
        if not msg.block_bytes:
            raise DecodeError("a proposal without a block")
        if msg.round == 0 and (msg.claims or msg.votes):
            raise DecodeError("a round-0 proposal needs no justification")
        if msg.round > 0 and not msg.claims:
            raise DecodeError("a proposal after round 0 needs round-change claims")
        for claim in msg.claims:
            if claim.prepared_round < 0 and claim.prepared_hash != ZERO_DIGEST:
                raise DecodeError("a claim with nothing prepared must carry a zero digest")
    elif kind == Kind.ROUND_CHANGE:
        if msg.round == 0 or msg.claims:
            raise DecodeError("malformed round change")
        if msg.prepared_round < 0:
            if msg.digest != ZERO_DIGEST or msg.votes or msg.block_bytes:
                raise DecodeError("a round change with nothing prepared carries nothing")
        elif msg.prepared_round >= msg.round or not msg.votes or not msg.block_bytes:
            raise DecodeError("a prepared round change needs an earlier round, a certificate and the block")
    elif kind == Kind.DECIDED:
        if msg.claims or not msg.votes or not msg.block_bytes:
            raise DecodeError("a decision carries its seals and its block")


def is_digest(text: str) -> bool:
    return len(text) == 64 and not (set(text) - _HEX)
