"""Byzantine validators for the BFT engine: an honest engine whose traffic an adversary rewrites.

A Byzantine node runs the real engine (so it keeps up and its lies are well timed) and passes
everything it sends through `BftAdversary.outgoing`; on every tick it may also inject messages of
its own. It holds only its own signing key. Behaviours (a node gets a random non-empty subset):

    equivocate         as proposer, send one block to some peers and a different one to the rest
    double_vote        PREPARE/COMMIT for the real block to some peers, for another to the rest
    amnesia            ROUND-CHANGE claiming nothing prepared, hiding its prepared block
    bad_justification  as round-change proposer, propose a fresh block despite a prepared one
    poison             propose blocks that the BlockChecker rejects
    bad_signature      corrupt signatures, and sign messages in another validator's name
    inflated_rounds    ROUND-CHANGE and votes for absurdly high rounds
    replay             resend old messages it received
    garbage            random bytes, truncations and bit flips of real messages
    spoil_relay        forward others' proposals with their unsigned parts (justification, block)
                       stripped or swapped, hoping to get there before the real thing
    wrong_chain        re-sign its messages for another chain
    selective          send each message to only some of the peers (a split-brain omission)
    silent             send nothing at all (an omission fault)
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.api import Signer
from consensus.bft.messages import ZERO_DIGEST, DecodeError, Kind, Message, decode, encode, sign
from ledger.block import Block, decode_block, make_block
from ledger.errors import Rejected

BEHAVIOURS = ("equivocate", "double_vote", "amnesia", "bad_justification", "poison", "bad_signature",
              "inflated_rounds", "replay", "garbage", "spoil_relay", "wrong_chain", "selective", "silent")
POISON_APP_HASH = "dead" * 16  # the simulator's BlockChecker rejects blocks with this app hash
MAX_REMEMBERED = 256


@dataclass(frozen=True)
class AdversaryContext:
    index: int
    node_id: str
    signer: Signer
    chain_id: str
    validators: Sequence[str]
    rng: random.Random
    behaviours: frozenset[str]
    status: Callable[[], dict[str, Any]]  # the node's engine status, or {} while it is down


class BftAdversary:
    def __init__(self, ctx: AdversaryContext) -> None:
        self._ctx = ctx
        self._rng = ctx.rng
        self._has = ctx.behaviours
        self._others = [v for v in ctx.validators if v != ctx.node_id]
        self._seen: list[bytes] = []  # messages received, for replays and mutations
        self._variants: dict[tuple[int, int], str] = {}  # (height, round) -> hash of the other block

    # --- what the node sends ---------------------------------------------------------------------

    def outgoing(self, to: str | None, data: bytes) -> list[tuple[str, bytes]]:
        """Rewrite one Send (to a peer) or Broadcast (to None) of the node's honest engine."""
        if "silent" in self._has:
            return []
        targets = [to] if to is not None else list(self._others)
        if "selective" in self._has and len(targets) > 1:
            targets = self._rng.sample(targets, self._rng.randint(1, len(targets) - 1))
        try:
            msg = decode(data)
        except DecodeError:
            return [(t, data) for t in targets]
        rng = self._rng
        out: list[tuple[str, bytes]] = []
        alternative: bytes | None = None
        if msg.kind == Kind.PROPOSAL:
            if "poison" in self._has and rng.random() < 0.5:
                data = self._reblock(msg, poison=True) or data
            if "bad_justification" in self._has and msg.round > 0 and msg.votes:
                data = self._reblock(msg, drop_certificate=True) or data
            if "equivocate" in self._has and rng.random() < 0.7:
                alternative = self._reblock(msg)
        elif msg.kind in (Kind.PREPARE, Kind.COMMIT) and "double_vote" in self._has and rng.random() < 0.6:
            other = self._variants.get((msg.height, msg.round)) or _random_digest(rng)
            alternative = self._resign(msg, digest=other)
        elif msg.kind == Kind.ROUND_CHANGE and "amnesia" in self._has and msg.prepared_round >= 0:
            data = self._resign(msg, digest=ZERO_DIGEST, prepared_round=-1, votes=(), block_bytes=b"")
        for target in targets:
            chosen = alternative if alternative is not None and rng.random() < 0.5 else data
            if "bad_signature" in self._has and rng.random() < 0.2:
                chosen = _corrupt_signature(chosen, rng)
            out.append((target, chosen))
        if "wrong_chain" in self._has and rng.random() < 0.1:
            out.append((rng.choice(targets), self._resign(msg, chain_id=msg.chain_id + "-fork")))
        return out

    def received(self, data: bytes) -> list[tuple[str, bytes]]:
        """Remember what arrived; a spoiling relay may forward a damaged copy at once."""
        out: list[tuple[str, bytes]] = []
        if "spoil_relay" in self._has and "silent" not in self._has and self._others:
            spoiled = self._spoil(data)
            if spoiled is not None:
                out = [(t, spoiled) for t in self._others if self._rng.random() < 0.7]
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.pop(self._rng.randrange(len(self._seen)))
        self._seen.append(data)
        return out

    def _spoil(self, data: bytes) -> bytes | None:
        try:
            msg = decode(data)
        except DecodeError:
            return None
        if msg.kind != Kind.PROPOSAL or msg.author == self._ctx.index:
            return None
        choice = self._rng.random()
        if choice < 0.4 and msg.claims:
            spoiled = dataclasses.replace(msg, claims=msg.claims[:-1], votes=())
        elif choice < 0.7 and self._seen:
            spoiled = dataclasses.replace(msg, block_bytes=self._rng.choice(self._seen)[-200:])
        else:
            body = bytearray(msg.block_bytes)
            body[self._rng.randrange(len(body))] ^= 0x20
            spoiled = dataclasses.replace(msg, block_bytes=bytes(body))
        return encode(spoiled)

    def spontaneous(self) -> list[tuple[str, bytes]]:
        """Messages the adversary makes up on a tick."""
        rng = self._rng
        if "silent" in self._has or not self._others or rng.random() > 0.15:
            return []
        status = self._ctx.status()
        if not status:
            return []
        height, round = status["height"], status["round"]
        out: list[tuple[str, bytes]] = []
        target = rng.choice(self._others)
        if "inflated_rounds" in self._has:
            high = min(round + rng.choice((1, 2, 7, 1000, 2**31)), 2**32 - 2)
            kind = rng.choice((Kind.ROUND_CHANGE, Kind.ROUND_CHANGE, Kind.PREPARE, Kind.COMMIT))
            digest = ZERO_DIGEST if kind == Kind.ROUND_CHANGE else _random_digest(rng)
            msg = sign(self._ctx.signer, self._ctx.chain_id, kind, height, high, self._ctx.index, digest)
            out.extend((t, encode(msg)) for t in self._others)
        if "replay" in self._has and self._seen:
            out.append((target, rng.choice(self._seen)))
        if "garbage" in self._has:
            out.append((target, self._garbage()))
        if "bad_signature" in self._has:
            # A vote in another validator's name, signed with this node's own key.
            victim = rng.randrange(len(self._ctx.validators))
            kind = rng.choice((Kind.PREPARE, Kind.COMMIT))
            digest = _random_digest(rng)
            forged = sign(self._ctx.signer, self._ctx.chain_id, kind, height, round, victim, digest)
            out.append((target, encode(forged)))
        return out

    # --- helpers ---------------------------------------------------------------------------------

    def _resign(self, msg: Message, **changes: Any) -> bytes:
        m = dataclasses.replace(msg, **changes)
        return encode(sign(self._ctx.signer, m.chain_id, m.kind, m.height, m.round, m.author, m.digest,
                           m.prepared_round, m.votes, m.claims, m.block_bytes))

    def _reblock(self, msg: Message, poison: bool = False, drop_certificate: bool = False) -> bytes | None:
        """The proposal re-signed with a different block for the same height and parent."""
        try:
            block = decode_block(msg.block_bytes)
        except Rejected:
            return None
        other = _other_block(block, self._ctx.node_id, self._rng, poison)
        self._variants[(msg.height, msg.round)] = other.hash
        votes = () if drop_certificate else msg.votes
        return self._resign(msg, digest=other.hash, votes=votes, block_bytes=other.encode())

    def _garbage(self) -> bytes:
        rng = self._rng
        choice = rng.random()
        data = bytearray(rng.choice(self._seen)) if self._seen else bytearray()
        if choice < 0.3 or not data:
            return rng.randbytes(rng.randrange(0, 300))
        if choice < 0.6:
            return bytes(data[:rng.randrange(len(data))])
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)


def _other_block(block: Block, proposer: str, rng: random.Random, poison: bool) -> Block:
    h = block.header
    txs = block.txs[:rng.randrange(len(block.txs) + 1)] if block.txs else ()
    app_hash = POISON_APP_HASH if poison else _random_digest(rng)
    return make_block(h.chain_id, h.height, h.prev_hash, h.timestamp + 1 + rng.randrange(1000), proposer, txs,
                      app_hash)


def _random_digest(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(16)).hexdigest()


def _corrupt_signature(data: bytes, rng: random.Random) -> bytes:
    try:
        msg = decode(data)
    except DecodeError:
        return data
    sig = bytearray(msg.signature)
    sig[rng.randrange(len(sig))] ^= 0x01
    return encode(Message(msg.kind, msg.chain_id, msg.height, msg.round, msg.author, msg.digest, bytes(sig),
                          msg.prepared_round, msg.votes, msg.claims, msg.block_bytes))
