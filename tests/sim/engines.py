"""The simulator's engine registry: how to build, check and attack each consensus engine.

The simulator itself knows nothing about any engine's messages. Everything engine-specific is in
an `EngineSpec`: the constructor, the certificate check, how many faulty nodes the engine
tolerates, how to summarise one of its messages (for traces and for the "an honest node never
signs two different things in one slot" checker), and, for engines that claim to tolerate
Byzantine validators, an adversary that rewrites a faulty node's traffic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.api import Engine, EngineContext, Verifier
from consensus.bft import BftEngine, verify_certificate
from consensus.bft.messages import DecodeError, Kind, decode
from consensus.bft.rounds import ProposerSchedule, max_faulty
from consensus.raft import RaftEngine
from consensus.raft import messages as raft_messages
from consensus.raft import verify_certificate as raft_verify_certificate
from ledger.block import Block
from ledger.genesis import Genesis
from node.core.machine import NodeCore
from node.core.validators import ValidatorSets
from storage import KeyValueStore, Store
from tests.sim.broken import (
    ActivatesOneHeightLate,
    ChecksBeforeTheCommitIsStored,
    CommitsOnTwoF,
    ForgetsItsHardState,
    IgnoresPreparedCertificate,
    KeepsTheOldQuorum,
    NeverAsksItsChecker,
    NeverChangesRound,
    NeverSkipsAProposer,
    SchedulesFromItsOwnSeals,
    SendsBeforePersist,
    ShrugsOffFailedWrites,
    UnsyncedBlockBatches,
    verify_two_f_certificate,
)
from tests.sim.byzantine import BEHAVIOURS, AdversaryContext, BftAdversary


@dataclass(frozen=True)
class MessageInfo:
    author: str  # node id of the signer, or "" when the frame names none
    slot: tuple[Any, ...] | None  # an honest node signs at most one content per slot; None: unchecked
    content: str
    text: str  # one line for traces


class Adversary(Protocol):
    def outgoing(self, to: str | None, data: bytes) -> list[tuple[str, bytes]]: ...

    def received(self, data: bytes) -> list[tuple[str, bytes]]: ...

    def spontaneous(self) -> list[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class EngineSpec:
    name: str
    make: Callable[[EngineContext], Engine]
    verify_certificate: Callable[[Block, Any, Sequence[str], Verifier], bool]
    max_faulty: Callable[[int], int]  # f for n nodes: Byzantine for BFT, crashed for Raft
    # Summarises a wire message; it is given the set in force at a height (message authors are
    # indices into their height's set).
    describe: Callable[[bytes, Callable[[int], Sequence[str]]], MessageInfo | None]
    adversary: Callable[[AdversaryContext], Adversary] | None = None  # None: no Byzantine faults
    behaviours: tuple[str, ...] = ()
    checker_once: bool = True  # the engine promises one BlockChecker call per distinct block
    # What node/node.py configures the executor with: BFT must propose (maybe empty) to end a round
    # change; Raft's round is its term, and an idle Raft leader proposes nothing.
    empty_block_after_round_0: bool = True
    consensus: str = "pbft"  # the engine's name in genesis
    core: type[NodeCore] = NodeCore  # the node core driving the engine (a broken one in bite tests)
    # Wraps the disk handle the node's Store writes through (a broken one in bite tests).
    store_backend: Callable[[KeyValueStore], KeyValueStore] | None = None
    # The BFT round-0 proposer schedule the engine runs, None for engines without one: an engine
    # is started with the proposers of as many recent blocks as it reads (as node/node.py does).
    schedule: ProposerSchedule | None = None
    # The reader of each height's validator set that one honest node uses on a chain whose set
    # changes (a broken one in bite tests); None: the node's own `ValidatorSets`, as on every node.
    odd_valsets: Callable[[Store, Genesis], ValidatorSets] | None = None


def describe_bft(data: bytes, validators_at: Callable[[int], Sequence[str]]) -> MessageInfo | None:
    try:
        msg = decode(data)
    except DecodeError:
        return None
    validators = validators_at(msg.height)
    author = validators[msg.author] if msg.author < len(validators) else ""
    text = f"{msg.kind.name} h={msg.height} r={msg.round} {msg.digest[:8]}"
    if msg.kind == Kind.ROUND_CHANGE:
        text += f" prepared={msg.prepared_round if msg.prepared_round >= 0 else '-'}"
    if msg.kind == Kind.PROPOSAL and msg.claims:
        text += f" justified by {len(msg.claims)} round changes" + (" + certificate" if msg.votes else "")
    slot = None if msg.kind == Kind.DECIDED else (msg.chain_id, int(msg.kind), msg.height, msg.round)
    return MessageInfo(author, slot, f"{msg.digest}/{msg.prepared_round}", text)


def describe_raft(data: bytes, validators_at: Callable[[int], Sequence[str]]) -> MessageInfo | None:
    """Raft messages are not signed, but each names its sender and the engine checks that against
    the authenticated peer. Votes: a RequestVote is the candidate's vote for itself, a granted
    VoteResponse a vote for the candidate; one per term. Entries: a leader sends one block per
    index in its term. Pre-votes bind nothing."""
    try:
        m = raft_messages.decode_message(data, None, 1 << 16, 1 << 30)
    except raft_messages.MalformedMessage:
        return None
    if isinstance(m, raft_messages.RequestVote):
        kind = "PreVote" if m.pre else "RequestVote"
        slot = None if m.pre else ("vote", m.term)
        return MessageInfo(m.sender, slot, m.sender,
                           f"{kind} t={m.term} last={m.last_index}/{m.last_term} commit={m.commit}")
    if isinstance(m, raft_messages.VoteResponse):
        kind = "PreVoteResponse" if m.pre else "VoteResponse"
        slot = ("vote", m.term) if m.granted and not m.pre else None
        answer = "grant" if m.granted else "refuse"
        return MessageInfo(m.sender, slot, m.candidate, f"{kind} t={m.term} {answer} {m.candidate[:8]}")
    if isinstance(m, raft_messages.AppendEntries):
        entry = ("entry", m.term, m.prev_index + 1) if m.entries else None
        first = m.entries[0].block.hash if m.entries else ""
        return MessageInfo(m.sender, entry, first,
                           f"AppendEntries t={m.term} prev={m.prev_index}/{m.prev_term} "
                           f"entries={len(m.entries)} {first[:8]} commit={m.commit} certs={len(m.certs)}")
    if isinstance(m, raft_messages.AppendResponse):
        answer = "ok" if m.success else f"reject hint={m.hint}"
        return MessageInfo(m.sender, None, "", f"AppendResponse t={m.term} {answer} index={m.index} "
                           f"commit={m.commit}")
    return MessageInfo(m.sender, None, "", f"SyncHint t={m.term} height={m.height}")


def _bft(name: str, make: Callable[[EngineContext], Engine],
         verify: Callable[[Block, Any, Sequence[str], Verifier], bool],
         schedule: ProposerSchedule | None = None) -> EngineSpec:
    return EngineSpec(name, make, verify, max_faulty, describe_bft, BftAdversary, BEHAVIOURS,
                      schedule=schedule or ProposerSchedule())


# The proposer schedule with backoffs short enough that a simulated run sees many retries and a
# window short enough that absent validators fall out of it (the production values are exercised
# by "pbft" itself).
FAST_RETRY = ProposerSchedule(window_turns=6, first_retry_turns=2, max_retry_turns=8)


def _fast_retry(ctx: EngineContext) -> Engine:
    return BftEngine(ctx, schedule=FAST_RETRY)


ENGINES: dict[str, EngineSpec] = {
    "pbft": _bft("pbft", BftEngine, verify_certificate),
    "pbft-fast-retry": _bft("pbft-fast-retry", _fast_retry, verify_certificate, FAST_RETRY),
    # Deliberately broken variants: tests/sim/test_checkers_bite.py proves the simulator catches them.
    "pbft-commit-2f": _bft("pbft-commit-2f", CommitsOnTwoF, verify_two_f_certificate),
    "pbft-ignore-prepared": _bft("pbft-ignore-prepared", IgnoresPreparedCertificate, verify_certificate),
    "pbft-amnesia": _bft("pbft-amnesia", ForgetsItsHardState, verify_certificate),
    "pbft-no-round-change": _bft("pbft-no-round-change", NeverChangesRound, verify_certificate),
    "pbft-no-checker": _bft("pbft-no-checker", NeverAsksItsChecker, verify_certificate),
    "pbft-checks-ahead": _bft("pbft-checks-ahead", ChecksBeforeTheCommitIsStored, verify_certificate),
    "pbft-never-skips": _bft("pbft-never-skips", NeverSkipsAProposer, verify_certificate),
    "pbft-own-seals-schedule": _bft("pbft-own-seals-schedule", SchedulesFromItsOwnSeals, verify_certificate),
    "pbft-old-quorum": _bft("pbft-old-quorum", KeepsTheOldQuorum, verify_certificate),
    "raft": EngineSpec("raft", RaftEngine, raft_verify_certificate, max_faulty=lambda n: (n - 1) // 2,
                       describe=describe_raft, empty_block_after_round_0=False, consensus="raft"),
}
# Broken node parts around the real engines (see tests/sim/broken.py).
ENGINES["pbft-late-activation"] = dataclasses.replace(ENGINES["pbft"], name="pbft-late-activation",
                                                      odd_valsets=ActivatesOneHeightLate)
for _base in ("pbft", "raft"):
    ENGINES[f"{_base}-unsynced-blocks"] = dataclasses.replace(
        ENGINES[_base], name=f"{_base}-unsynced-blocks", store_backend=UnsyncedBlockBatches)
    ENGINES[f"{_base}-send-before-persist"] = dataclasses.replace(
        ENGINES[_base], name=f"{_base}-send-before-persist", core=SendsBeforePersist)
    ENGINES[f"{_base}-ignores-disk-errors"] = dataclasses.replace(
        ENGINES[_base], name=f"{_base}-ignores-disk-errors", core=ShrugsOffFailedWrites)
