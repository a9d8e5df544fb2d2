"""The QBFT-style state machine: one height at a time, rounds within a height.

Per height, in round r (proposer: for r = 0 `rounds.ProposerSchedule` over the last committed
headers, which skips validators the chain shows absent; for r > 0 `rounds.proposer_index(height, r, n)`):

- PRE-PREPARE. The proposer broadcasts a PROPOSAL with a block. In round 0 it needs no
  justification; in a later round it carries a quorum of ROUND-CHANGE claims for r and, when any of
  them reports a prepared block, must re-propose the block of the highest prepared round together
  with that round's prepare certificate (`justification`).
- PREPARE. A replica fully validates the proposal (header against the parent, size, justification,
  then the injected BlockChecker) and broadcasts PREPARE(r, hash). A justified proposal for a round
  above its own moves it to that round.
- COMMIT. On a quorum of PREPAREs for the proposal of its current round the replica is *prepared*:
  it persists (round, hash, certificate, block) and broadcasts COMMIT(r, hash), whose signature is
  its commit seal.
- DECIDE. A quorum of COMMITs for one (round, hash), in any round, commits the block: the engine
  emits `Commit(block, certificate)` and starts the next height.
- ROUND-CHANGE. When the round timer expires (`round_timeout_ticks` doubling each round up to
  `max_round_timeout_ticks`; round 0 of a proposer the schedule is retrying after missed turns
  gets `retry_round_timeout_ticks` until its valid proposal arrives) the replica moves to r + 1
  and broadcasts ROUND-CHANGE(r + 1) reporting its prepared round, block and certificate. Seeing
  f + 1 validators in rounds above its own, it joins the lowest of them (f + 1 includes an honest
  one, so a single validator announcing inflated rounds cannot drag anyone along). The proposer of
  r, holding a quorum of ROUND-CHANGEs for r, proposes. The round timer restarts when that quorum
  arrives and when a valid proposal for the round does (as in IBFT 2.0), which keeps the
  validators' timers in step.
- Round synchronisation. A replica leaves round r on timeout only once r has *started*: r is 0,
  or it saw a valid proposal or prepared certificate for r or later, or a quorum of validators
  have announced rounds >= r. Otherwise it stays and re-broadcasts its ROUND-CHANGE(r) (the same
  content: its prepared state cannot have changed in a round that never started). Without this
  rule a validator that once timed out a round early leaves every round just as the others
  reach it, for ever, because capped timeouts stop the others from catching up; with it, that
  validator waits and the laggards, counting its higher ROUND-CHANGE towards their quorum, come
  to it.

Idle chains stay quiet: the proposer of round 0 asks for a block only after `TxsAvailable`, and a
replica's round timer starts only once the height shows activity (`TxsAvailable`, or any validly
signed message for this height or a later one). The flag is per height: the runtime signals
`TxsAvailable` again after a commit while its mempool still holds transactions. In a round after a
round change with nothing prepared the runtime should build a block even if it is empty: that block
is what ends the round change. `BlockChecker.check_block` must not reject a block for being old,
because a re-proposed block keeps its original timestamp. The checker runs on the runtime's
committed head, so what is left to handle once a step returns a `Commit` (the next height's
buffered messages it releases, an event) is handled from the next step on.

Crash safety: each signed message is preceded in the action list by a `Persist` of the hard state
that records it (see `hardstate`); within the actions of one step, up to a `Commit`, these Persists
are coalesced into one, placed before the first message. A restarted engine resumes its round from
`EngineContext.restored` with its round timer running.

A peer that sends a ROUND-CHANGE for the height this engine has just committed is stuck on it; it
gets, once per height, a DECIDED reply (the block and its commit seals) so that it can finish
without waiting for block sync.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.api import (
    Action,
    Broadcast,
    BuildProposal,
    ChainAdvanced,
    ChainTip,
    Commit,
    EngineContext,
    Event,
    Persist,
    ProposalBuilt,
    Received,
    Send,
    Tick,
    TxsAvailable,
)
from consensus.bft import justification
from consensus.bft.certificate import build_certificate
from consensus.bft.hardstate import BLOCK_KEY, STATE_KEY, HardState, decode_state
from consensus.bft.justification import Invalid
from consensus.bft.messages import ZERO_DIGEST, Claim, DecodeError, Kind, Message, Vote, decode, encode, sign
from consensus.bft.rounds import (
    MAX_ROUND,
    MAX_VALIDATORS,
    ProposerSchedule,
    max_faulty,
    proposer_index,
    quorum_size,
    round_timeout_ticks,
)
from ledger.block import Block, decode_block
from ledger.errors import Rejected


@dataclass(frozen=True)
class BftLimits:
    """BFT-only bounds on what peers can make this engine hold; `EngineConfig` has the shared ones."""

    max_round_lead: int = 64  # PREPARE/COMMIT votes more than this many rounds ahead are dropped
    max_attachment_bytes: int = 256 * 1024  # a message may exceed max_block_bytes by this much


class _Height:
    """What the engine knows about the height it is deciding; replaced wholesale on commit."""

    def __init__(self, parent: ChainTip) -> None:
        self.parent = parent
        self.height = parent.height + 1
        self.round = 0
        self.round0_proposer: int | None = None  # computed once per height, from the chain
        self.round0_retry = False  # ... and whether that proposer is being retried after missed turns
        self.active = False  # the height has shown activity: the round timer runs
        self.timer: int | None = None  # ticks left in this round
        self.txs_available = False
        self.build_round: int | None = None  # round of an unanswered BuildProposal
        # What this validator signed in `round`; persisted before any of it leaves the node.
        self.proposed: str | None = None
        self.prepare_sent: str | None = None
        self.commit_sent: str | None = None
        self.round_change_sent = False
        self.round_quorum_seen = False  # a quorum of ROUND-CHANGEs for `round` arrived
        # QBFT's prepared value (persisted).
        self.prepared_round = -1
        self.prepared_hash: str | None = None
        self.prepared_cert: tuple[Vote, ...] = ()
        self.prepared_block: Block | None = None
        # What it has seen from the network.
        self.blocks: dict[str, Block] = {}  # structurally valid blocks for this height, by hash
        self.verdicts: dict[str, str | None] = {}  # BlockChecker results, by hash
        self.proposals: dict[int, Message] = {}  # the first valid proposal of each round
        self.failed_rounds: set[int] = set()  # rounds whose proposer sent an invalid proposal
        self.prepares: dict[int, dict[str, dict[int, bytes]]] = {}  # round -> hash -> author -> signature
        self.commits: dict[int, dict[str, dict[int, bytes]]] = {}
        self.votes_seen: dict[tuple[int, int, int], str] = {}  # (kind, round, author) -> hash
        self.round_changes: dict[int, Message] = {}  # author -> its highest-round ROUND-CHANGE


class BftEngine:
    """A QBFT/IBFT 2.0 style engine: n = 3f + 1 validators, immediate finality. See the module doc."""

    kind = "pbft"

    def __init__(self, ctx: EngineContext, limits: BftLimits | None = None,
                 schedule: ProposerSchedule | None = None) -> None:
        self.counters: dict[str, int] = {}
        self._ctx = ctx
        self._cfg = ctx.config
        self._limits = limits or BftLimits()
        self._chain_id = ctx.chain_id
        self._use_validators(self._validators_for(ctx.tip.height + 1))
        self._schedule = schedule or ProposerSchedule()
        # Proposer indices of the last committed blocks, the last one being the tip's: the input of
        # the round-0 schedule, rebuilt from the chain on every start, extended on every commit.
        self._recent: deque[int] = deque(maxlen=self._schedule.window_blocks(self._n))
        self._recent.extend(self._indices(ctx.recent_proposers, ctx.tip.height))
        self._max_message_bytes = self._cfg.max_block_bytes + self._limits.max_attachment_bytes
        self._out: list[Action] = []
        # Verified (or own) messages still to handle, each with whether it came from its author.
        self._queue: deque[tuple[Message, bool]] = deque()
        self._events: deque[Event] = deque()  # events a Commit in an earlier step left for later
        self._commit_returned = False  # this step returns a Commit: handle nothing more (see step)
        # The same, for future heights, each with the bytes it is charged for (see `_buffer_message`).
        self._buffer: dict[int, list[tuple[Message, bool, int]]] = {}
        # What is buffered, by identity and directness: a relayed copy (whose unsigned attachments a
        # relay may have spoiled) must not crowd out the copy from the author itself.
        self._buffered_ids: set[tuple[tuple[int, int, int, int, str, int], bool]] = set()
        # The one signed content buffered per (kind, height, round, author): an honest validator
        # signs one message per slot, so a second, different one is equivocation.
        self._buffered_slots: dict[tuple[int, int, int, int], tuple[int, int, int, int, str, int]] = {}
        self._buffered_bytes = 0
        self._reset_buffer_shares()
        self._last_decided: tuple[Block, int, tuple[Vote, ...]] | None = None
        self._decided_msg: bytes | None = None
        self._decided_replied: set[str] = set()
        self._disk_block: str | None = None  # hash of the block under BLOCK_KEY on disk
        self._hs = _Height(ctx.tip)
        self._restore(ctx.restored)

    # --- the validator set of the current height ------------------------------------------------

    def _validators_for(self, height: int) -> tuple[str, ...]:
        validators = tuple(self._ctx.validators if self._ctx.validators_at is None
                           else self._ctx.validators_at(height))
        if not 0 < len(validators) <= MAX_VALIDATORS:
            raise ValueError(f"a BFT engine needs 1 to {MAX_VALIDATORS} validators")
        if len(set(validators)) != len(validators):
            raise ValueError("validator ids must be distinct")
        return validators

    def _use_validators(self, validators: tuple[str, ...]) -> None:
        """The set, n, f, quorum and this node's index (None: not a validator) of the height."""
        self._validators = validators
        self._n = len(validators)
        self._f = max_faulty(self._n)
        self._quorum = self.quorum(self._n)
        me = self._ctx.signer.node_id
        self._me: int | None = validators.index(me) if me in validators else None
        self._index = {v: i for i, v in enumerate(validators)}

    def _reset_buffer_shares(self) -> None:
        self._buffered_per_author = [0] * self._n
        self._buffered_bytes_per_author = [0] * self._n
        self._buffer_cap_per_author = max(1, self._cfg.max_buffered_messages // self._n)
        # Shares that add up to at most max_buffered_bytes: that bounds the total, and no group of
        # authors can take space the others are owed.
        self._buffer_bytes_cap_per_author = min(self._cfg.max_buffered_bytes_per_author,
                                                self._cfg.max_buffered_bytes // self._n)

    def _change_validators(self, height: int) -> None:
        """Entering `height`: take up its set (from `EngineContext.validators_at`).

        When it differs from the last one, messages held for future heights are dropped: they were
        checked against the old set, and an author index names another validator in the new one
        (their senders repeat them on a round change). The proposer history is re-indexed by id in
        the new set, so the round-0 schedule stays what every other node computes."""
        validators = self._validators_for(height)
        if validators == self._validators:
            return
        dropped = sum(len(held) for held in self._buffer.values())
        self._buffer.clear()
        self._buffered_ids.clear()
        self._buffered_slots.clear()
        self._buffered_bytes = 0
        if dropped:
            name = "dropped_validator_set_change"
            self.counters[name] = self.counters.get(name, 0) + dropped
        old = self._validators
        recent_ids = [old[i] if 0 <= i < len(old) else "" for i in self._recent]
        self._use_validators(validators)
        self._reset_buffer_shares()
        self._recent = deque((self._index.get(v, -1) for v in recent_ids),
                             maxlen=self._schedule.window_blocks(self._n))
        self._count("validator_set_changes")

    # --- hooks a test may override to break the protocol on purpose ------------------------------

    def quorum(self, n: int) -> int:
        return quorum_size(n)

    def highest_prepared(self, claims: Sequence[Claim]) -> Claim | None:
        """The prepared block a round-change proposal must carry (proposer side)."""
        return justification.highest_prepared(claims)

    def check_reproposal(self, msg: Message) -> bool:
        """QBFT JustifyPrePrepare (replica side); True when `msg` re-proposes a prepared block."""
        return justification.check_reproposal(
            self._ctx.verifier, self._validators, self._chain_id, msg.height, msg.digest, msg.claims,
            msg.votes, self._quorum)

    # --- the interface -----------------------------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        """Handle `event`, then the messages it queued, but nothing more once a Commit is returned.

        The BlockChecker executes on the runtime's committed head, and the runtime stores a decided
        block only when it executes the Commit, after this step. A commit starts the next height
        and releases its buffered messages; their proposal, asked about now, would be refused (and
        that verdict is kept for the height). So what is left after a Commit, queued messages and
        events alike, waits for the next step, which starts with it; a ChainAdvanced goes first,
        since the messages may be for a height the runtime's store has passed.
        """
        self._events.append(event)
        while not self._commit_returned:
            if self._events and (not self._queue or isinstance(self._events[0], ChainAdvanced)):
                self._dispatch(self._events.popleft())
            elif self._queue:
                msg, direct = self._queue.popleft()
                if msg.height == self._hs.height:
                    self._handle(msg, direct)
            else:
                break
        self._commit_returned = False
        out, self._out = self._out, []
        return _coalesce_persists(out)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Tick):
            self._on_tick()
        elif isinstance(event, Received):
            self._on_received(event.sender, event.data)
        elif isinstance(event, TxsAvailable):
            self._on_txs_available()
        elif isinstance(event, ProposalBuilt):
            self._on_proposal_built(event)
        elif isinstance(event, ChainAdvanced):
            self._on_chain_advanced(event.tip, event.proposers)
        else:
            raise TypeError(f"not an engine event: {event!r}")

    def proposer_of(self, round: int) -> str:
        """The validator whose proposal counts in `round` of the height being decided."""
        return self._validators[self._proposer(round)]

    def status(self) -> dict[str, Any]:
        hs = self._hs
        return {
            "engine": self.kind,
            "height": hs.height,
            "round": hs.round,
            "proposer": self.proposer_of(hs.round),
            "validators": self._n,
            "max_faulty": self._f,
            "quorum": self._quorum,
            "is_validator": self._me is not None,
            "prepared_round": hs.prepared_round if hs.prepared_round >= 0 else None,
            "round_timer_ticks": hs.timer,
        }

    # --- events ------------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        hs = self._hs
        if hs.timer is None:
            return
        hs.timer -= 1
        if hs.timer > 0:
            return
        self._count("round_timeouts")
        if hs.round < MAX_ROUND and self._round_started():
            self._enter_round(hs.round + 1, send_round_change=True)
            return
        hs.timer = self._timeout(hs.round)
        self._send_round_change()

    def _on_txs_available(self) -> None:
        self._hs.txs_available = True
        self._activate()
        self._maybe_build_first_proposal()

    def _on_proposal_built(self, event: ProposalBuilt) -> None:
        hs = self._hs
        if event.height != hs.height or event.round != hs.round or hs.build_round != event.round:
            self._count("stale_proposal_built")
            return
        hs.build_round = None
        block = event.block
        if block is None:
            if event.round == 0:
                hs.txs_available = False  # nothing to propose after all; wait for the next signal
            return
        me = self._me
        assert me is not None
        header = block.header
        if (header.chain_id, header.height, header.prev_hash, header.proposer) != (
                self._chain_id, hs.height, hs.parent.block_hash, self._validators[me]) \
                or header.timestamp <= hs.parent.timestamp or len(block.encode()) > self._cfg.max_block_bytes:
            raise ValueError(f"BuildProposal({hs.height}, {hs.round}) was answered with a block that is not "
                             f"a valid child of {hs.parent.block_hash} by this validator (header, timestamp "
                             f"or size)")
        if event.round == 0:
            self._propose(block, (), ())
            return
        justified = self._round_change_justification(event.round)
        if justified is None:
            return  # the round-change quorum went stale meanwhile; the round timer moves on
        claims, best = justified
        if best is not None:
            self._repropose(claims, best)
        else:
            self._propose(block, claims, ())

    def _on_chain_advanced(self, tip: ChainTip, proposers: Sequence[str]) -> None:
        if tip.height < self._hs.height:
            self._count("stale_chain_advanced")
            return
        gained = tip.height - self._hs.parent.height
        known = self._indices(proposers, tip.height)
        if len(known) < gained:
            # A hole in what this node knows of the chain: keep only what follows it. The schedule
            # may then differ from other nodes' for a while, which costs at most a round 0.
            self._count("proposer_history_gaps")
            self._recent.clear()
            self._recent.extend(known)
        elif len(known) > len(self._recent) + gained:
            self._recent.clear()
            self._recent.extend(known)
        else:
            self._recent.extend(known[len(known) - gained:])
        self._last_decided = None
        self._decided_msg = None
        self._start_height(tip)

    def _on_received(self, sender: str, data: bytes) -> None:
        if len(data) > self._max_message_bytes:
            return self._drop("oversize")
        try:
            msg = decode(data, max_votes=self._n)
        except DecodeError:
            return self._drop("malformed")
        if msg.chain_id != self._chain_id:
            return self._drop("wrong_chain")
        if msg.author >= self._n:
            return self._drop("non_validator")
        hs = self._hs
        if msg.height < hs.height:
            self._maybe_reply_decided(sender, msg)
            return self._drop("stale_height")
        if msg.height > hs.height + self._cfg.max_future_heights:
            return self._drop("far_future_height")
        if not self._verify(msg):
            return self._drop("bad_signature")
        self._activate()
        direct = sender == self._validators[msg.author]
        if msg.height > hs.height:
            self._buffer_message(msg, direct, len(data))
            return
        self._handle(msg, direct)

    # --- message handlers --------------------------------------------------------------------------

    def _handle(self, msg: Message, direct: bool) -> None:
        self._activate()
        if msg.kind == Kind.PROPOSAL:
            self._on_proposal(msg, direct)
        elif msg.kind in (Kind.PREPARE, Kind.COMMIT):
            self._on_vote(msg)
        elif msg.kind == Kind.ROUND_CHANGE:
            self._on_round_change(msg)
        else:
            self._on_decided(msg)

    def _on_proposal(self, msg: Message, direct: bool) -> None:
        """`direct`: the proposer itself sent these bytes, so an invalid proposal is its own fault."""
        hs = self._hs
        r = msg.round
        if msg.author != self._proposer(r):
            return self._drop("not_proposer")
        seen = hs.proposals.get(r)
        if seen is not None:
            if seen.digest == msg.digest:
                return self._drop("duplicate")
            self._count("equivocations_seen")
            return self._drop("equivocation")
        if r in hs.failed_rounds:
            # The proposer already sent an invalid proposal for this round: it gets one attempt, so
            # that it cannot make this node decode and execute block after block. (Only bytes from
            # the proposer itself count: the justification and block are not covered by its
            # signature, so a relay could have spoiled them.)
            return self._drop("proposer_already_failed")
        failed = hs.failed_rounds.add if direct else _ignore
        reproposal = False
        if r > 0:  # the justification is checked first: it is far cheaper than decoding a block
            try:
                justification.check_claims(self._ctx.verifier, self._validators, self._chain_id, hs.height, r,
                                           msg.claims, self._quorum)
                reproposal = self.check_reproposal(msg)
            except Invalid as exc:
                failed(r)
                return self._drop(exc.reason)
        block = self._block_for(msg.digest, msg.block_bytes)
        if block is None:
            failed(r)
            return
        if not reproposal and block.header.proposer != self._validators[msg.author]:
            failed(r)
            return self._drop("wrong_block_proposer")
        if not self._block_acceptable(block):
            failed(r)
            return self._drop("block_rejected")
        hs.proposals[r] = msg
        if r < hs.round:
            self._try_decide()  # too late to vote, but the block may be what a commit quorum is for
            return
        if r > hs.round:
            self._enter_round(r, send_round_change=False)
        else:
            hs.timer = self._timeout(r)  # IBFT 2.0: a valid proposal restarts the round timer
        self._send_prepare(block.hash)
        self._try_decide()

    def _on_vote(self, msg: Message) -> None:
        hs = self._hs
        r = msg.round
        if msg.kind == Kind.PREPARE and r < hs.round:
            return self._drop("old_round")
        if r > hs.round + self._limits.max_round_lead:
            return self._drop("far_future_round")
        key = (msg.kind, r, msg.author)
        seen = hs.votes_seen.get(key)
        if seen is not None:
            if seen == msg.digest:
                return self._drop("duplicate")
            self._count("equivocations_seen")
            return self._drop("equivocation")
        hs.votes_seen[key] = msg.digest
        table = hs.prepares if msg.kind == Kind.PREPARE else hs.commits
        table.setdefault(r, {}).setdefault(msg.digest, {})[msg.author] = msg.signature
        if msg.kind == Kind.PREPARE:
            self._check_prepared()
        else:
            self._try_decide()

    def _on_round_change(self, msg: Message) -> None:
        hs = self._hs
        if msg.round < hs.round:
            return self._drop("old_round")
        previous = hs.round_changes.get(msg.author)
        if previous is not None:
            if previous.round > msg.round:
                return self._drop("old_round")
            if previous.round == msg.round:
                if previous.identity() == msg.identity():
                    return self._drop("duplicate")
                self._count("equivocations_seen")
                return self._drop("equivocation")
        if msg.prepared_round >= 0:
            try:
                justification.check_votes(self._ctx.verifier, self._validators, self._chain_id, Kind.PREPARE,
                                          hs.height, msg.prepared_round, msg.digest, msg.votes, self._quorum)
            except Invalid as exc:
                return self._drop(exc.reason)
            if self._block_for(msg.digest, msg.block_bytes) is None:
                return
        hs.round_changes[msg.author] = msg
        if msg.round == hs.round and not hs.round_quorum_seen \
                and sum(m.round == hs.round for m in hs.round_changes.values()) >= self._quorum:
            # The round starts now for everyone who sees this quorum: timing it from here keeps the
            # validators' timers in step, so that none leaves the round just as it gets going.
            hs.round_quorum_seen = True
            hs.timer = self._timeout(hs.round)
        self._check_round_skip()
        self._check_round_change_quorum()
        if msg.prepared_round >= 0:
            self._try_decide()  # its block may be the one a commit quorum is waiting for

    def _on_decided(self, msg: Message) -> None:
        try:
            justification.check_votes(self._ctx.verifier, self._validators, self._chain_id, Kind.COMMIT,
                                      msg.height, msg.round, msg.digest, msg.votes, self._quorum)
        except Invalid as exc:
            return self._drop(exc.reason)
        block = self._block_for(msg.digest, msg.block_bytes)
        if block is None:
            return
        self._decide(block, msg.round, {v.author: v.signature for v in msg.votes})

    # --- the protocol ------------------------------------------------------------------------------

    def _send_prepare(self, digest: str) -> None:
        hs = self._hs
        if hs.prepare_sent is not None:
            if hs.prepare_sent != digest:
                self._count("refused_to_equivocate")  # only after a restart can this happen
            return
        if self._me is None:
            return
        hs.prepare_sent = digest
        self._persist()
        self._broadcast(self._sign(Kind.PREPARE, hs.round, digest))

    def _check_prepared(self) -> None:
        hs = self._hs
        digest = hs.prepare_sent
        if digest is None or hs.commit_sent is not None:
            return
        votes = hs.prepares.get(hs.round, {}).get(digest, {})
        block = hs.blocks.get(digest)
        if len(votes) < self._quorum or block is None:
            return
        hs.prepared_round = hs.round
        hs.prepared_hash = digest
        hs.prepared_cert = tuple(Vote(a, s) for a, s in sorted(votes.items()))
        hs.prepared_block = block
        hs.commit_sent = digest
        self._persist()
        self._broadcast(self._sign(Kind.COMMIT, hs.round, digest))

    def _try_decide(self) -> None:
        hs = self._hs
        for r, by_hash in hs.commits.items():
            for digest, votes in by_hash.items():
                block = hs.blocks.get(digest)
                if len(votes) >= self._quorum and block is not None:
                    self._decide(block, r, votes)
                    return

    def _decide(self, block: Block, round: int, votes: Mapping[int, bytes]) -> None:
        if not self._block_acceptable(block):
            # A quorum committed it, so it is final whatever this node's checker says.
            self._count("committed_block_rejected_by_checker")
        seals = tuple(Vote(a, s) for a, s in sorted(votes.items()))
        self._out.append(Commit(block, build_certificate(block, round, seals, self._validators)))
        self._commit_returned = True
        self._count("blocks_committed")
        self._last_decided = (block, round, seals)
        self._decided_msg = None
        self._decided_replied = set()
        self._recent.append(self._index.get(block.header.proposer, -1))
        self._start_height(ChainTip(block.height, block.hash, block.header.timestamp, block.header.app_hash))

    def _enter_round(self, round: int, send_round_change: bool) -> None:
        hs = self._hs
        hs.round = round
        hs.proposed = hs.prepare_sent = hs.commit_sent = None
        hs.round_change_sent = False
        hs.round_quorum_seen = False
        hs.build_round = None
        hs.active = True
        hs.timer = self._timeout(round)
        if send_round_change:
            self._send_round_change()

    def _send_round_change(self) -> None:
        """Broadcast ROUND-CHANGE(round), again if need be: its content is fixed within the round.

        It reports the prepared state, which changes only when a quorum prepares in the current
        round; a round with a prepare quorum has started, and a validator re-sends only in a round
        that has not, so every copy it signs for one round says the same.
        """
        hs = self._hs
        if self._me is None:
            return
        if not hs.round_change_sent:
            hs.round_change_sent = True
            self._persist()
        mine = hs.round_changes.get(self._me)
        block_bytes = hs.prepared_block.encode() if hs.prepared_block is not None else b""
        msg = self._sign(Kind.ROUND_CHANGE, hs.round, hs.prepared_hash or ZERO_DIGEST, hs.prepared_round,
                         votes=hs.prepared_cert, block_bytes=block_bytes)
        self._broadcast(msg, deliver_self=mine is None or mine.round != hs.round)

    def _round_started(self) -> bool:
        """Whether the current round got going anywhere, so that timing out of it moves on."""
        hs = self._hs
        r = hs.round
        if r == 0 or hs.round_quorum_seen or r in hs.proposals or hs.prepare_sent is not None \
                or hs.proposed is not None or hs.prepared_round >= r:
            return True
        present = 0
        for msg in hs.round_changes.values():
            if msg.prepared_round >= r:
                return True
            if msg.round >= r:
                present += 1
        return present >= self._quorum

    def _check_round_skip(self) -> None:
        """QBFT: f + 1 ROUND-CHANGEs above our round prove an honest validator is there; join the lowest."""
        hs = self._hs
        ahead = sorted((m.round for m in hs.round_changes.values() if m.round > hs.round), reverse=True)
        if len(ahead) > self._f:
            self._count("round_skips")
            self._enter_round(ahead[self._f], send_round_change=True)

    def _round_change_justification(self, round: int) -> tuple[tuple[Claim, ...], Message | None] | None:
        """A quorum of claims for `round` and the ROUND-CHANGE with the highest prepared block, if any."""
        changes = sorted((m for m in self._hs.round_changes.values() if m.round == round),
                         key=lambda m: m.author)
        if len(changes) < self._quorum:
            return None
        claims = tuple(m.claim() for m in changes)
        best = self.highest_prepared(claims)
        if best is None:
            return claims, None
        return claims, next(m for m in changes if m.author == best.author)

    def _check_round_change_quorum(self) -> None:
        hs = self._hs
        r = hs.round
        if r == 0 or self._me != self._proposer(r) or hs.proposed is not None \
                or hs.build_round == r:
            return
        justified = self._round_change_justification(r)
        if justified is None:
            return
        claims, best = justified
        if best is not None:
            self._repropose(claims, best)
        else:
            hs.build_round = r
            self._out.append(BuildProposal(hs.height, r, hs.parent))

    def _repropose(self, claims: tuple[Claim, ...], best: Message) -> None:
        block = self._hs.blocks.get(best.digest)
        if block is None:
            raise AssertionError("a validated ROUND-CHANGE's prepared block went missing")
        self._propose(block, claims, best.votes)

    def _propose(self, block: Block, claims: tuple[Claim, ...], prepared_cert: tuple[Vote, ...]) -> None:
        hs = self._hs
        hs.proposed = block.hash
        hs.blocks[block.hash] = block
        self._persist()
        self._broadcast(self._sign(Kind.PROPOSAL, hs.round, block.hash, votes=prepared_cert, claims=claims,
                                   block_bytes=block.encode()))

    def _maybe_build_first_proposal(self) -> None:
        hs = self._hs
        if hs.round == 0 and hs.txs_available and hs.proposed is None and hs.build_round is None \
                and self._me is not None and self._me == self._proposer(0):
            hs.build_round = 0
            self._out.append(BuildProposal(hs.height, 0, hs.parent))

    # --- heights, the buffer, catch-up -------------------------------------------------------------

    def _start_height(self, tip: ChainTip) -> None:
        self._hs = _Height(tip)
        height = self._hs.height
        self._change_validators(height)
        for h in sorted(self._buffer):
            if h > height:
                break
            for msg, direct, size in self._buffer.pop(h):
                self._buffered_ids.discard((msg.identity(), direct))
                self._buffered_slots.pop(_slot(msg), None)
                self._buffered_per_author[msg.author] -= 1
                self._buffered_bytes_per_author[msg.author] -= size
                self._buffered_bytes -= size
                if h == height:
                    self._queue.append((msg, direct))

    @property
    def buffered_bytes(self) -> int:
        """What the messages held for future heights are charged, in all (see `_buffer_message`)."""
        return self._buffered_bytes

    def _buffer_message(self, msg: Message, direct: bool, wire_bytes: int) -> None:
        """Hold a verified message for a future height, within bounds in count and in bytes.

        Only the signature has been checked: the attachments (a block of up to `max_block_bytes`)
        are not looked at before the height comes, so a faulty validator could otherwise make this
        node hold block after block. Each message is charged the bytes it arrived as plus a fixed
        allowance for the objects around them, against its author's share of the total; what does
        not fit is dropped, never grown into.
        """
        ident = (msg.identity(), direct)
        if ident in self._buffered_ids:
            return self._drop("duplicate")
        slot = _slot(msg)
        held = self._buffered_slots.get(slot)
        if held is not None and held != msg.identity():
            self._count("equivocations_seen")
            return self._drop("equivocation")
        author = msg.author
        if self._buffered_per_author[author] >= self._buffer_cap_per_author:
            return self._drop("buffer_full")
        size = wire_bytes + _BUFFER_ENTRY_OVERHEAD_BYTES
        if self._buffered_bytes_per_author[author] + size > self._buffer_bytes_cap_per_author:
            return self._drop("buffer_author_bytes_full")
        self._buffered_ids.add(ident)
        self._buffered_slots[slot] = msg.identity()
        self._buffered_per_author[author] += 1
        self._buffered_bytes_per_author[author] += size
        self._buffered_bytes += size
        self._buffer.setdefault(msg.height, []).append((msg, direct, size))
        self._count("buffered")

    def _maybe_reply_decided(self, sender: str, msg: Message) -> None:
        """A peer still on the height we just committed: send it the block and seals, once."""
        decided = self._last_decided
        # Only a ROUND-CHANGE says the peer is stuck: late votes from peers that decided too are routine.
        if decided is None or self._me is None or msg.kind != Kind.ROUND_CHANGE \
                or msg.height != decided[0].height:
            return
        if sender not in self._validators or sender in self._decided_replied or not self._verify(msg):
            return
        self._decided_replied.add(sender)
        if self._decided_msg is None:
            block, round, seals = decided
            self._decided_msg = encode(self._sign(Kind.DECIDED, round, block.hash, height=block.height,
                                                  votes=seals, block_bytes=block.encode()))
        self._out.append(Send(sender, self._decided_msg))
        self._count("decided_replies")

    # --- helpers -----------------------------------------------------------------------------------

    def _proposer(self, round: int) -> int:
        """The validator whose proposal counts in `round` of the current height."""
        hs = self._hs
        if round > 0:
            return proposer_index(hs.height, round, self._n)
        if hs.round0_proposer is None:
            if len(self._recent) > hs.parent.height:
                raise AssertionError("the proposer history reaches below genesis")
            hs.round0_proposer, hs.round0_retry = self._schedule.round0(hs.height, self._n, self._recent)
        return hs.round0_proposer

    def _indices(self, proposers: Iterable[str], tip_height: int) -> list[int]:
        """Validator indices of the proposers of the blocks up to `tip_height`, oldest first."""
        indices = [self._index.get(p, -1) for p in proposers]
        return indices[len(indices) - min(len(indices), tip_height, self._schedule.window_blocks(self._n)):]

    def _activate(self) -> None:
        hs = self._hs
        if not hs.active:
            hs.active = True
            hs.timer = self._timeout(hs.round)

    def _timeout(self, round: int) -> int:
        ticks = round_timeout_ticks(round, self._cfg.round_timeout_ticks, self._cfg.max_round_timeout_ticks)
        if round == 0 and 0 not in self._hs.proposals:
            # A proposer on a retry has most likely not come back: waiting a full timeout for it is
            # what made a crashed validator expensive. Once its proposal arrives, the timer restarts
            # with the full timeout, so a validator that is back is not cut short.
            self._proposer(0)
            if self._hs.round0_retry:
                return min(ticks, self._cfg.retry_round_timeout_ticks)
        return ticks

    def _block_for(self, digest: str, block_bytes: bytes) -> Block | None:
        """The block with hash `digest` for this height, decoded from `block_bytes` unless known."""
        hs = self._hs
        block = hs.blocks.get(digest)
        if block is not None:
            return block
        if len(block_bytes) > self._cfg.max_block_bytes:
            self._drop("block_too_large")
            return None
        try:
            block = decode_block(block_bytes, memo=self._ctx.decode_memo)
        except Rejected:
            self._drop("malformed_block")
            return None
        if block.hash != digest:
            self._drop("block_hash_mismatch")
            return None
        header = block.header
        if header.chain_id != self._chain_id or header.height != hs.height \
                or header.prev_hash != hs.parent.block_hash or header.timestamp <= hs.parent.timestamp:
            self._drop("block_does_not_extend_tip")
            return None
        hs.blocks[digest] = block
        return block

    def _block_acceptable(self, block: Block) -> bool:
        """The BlockChecker's verdict, asked once per distinct block: in production it executes it."""
        verdicts = self._hs.verdicts
        if block.hash not in verdicts:
            verdicts[block.hash] = self._ctx.checker.check_block(block, self._hs.parent)
        return verdicts[block.hash] is None

    def _verify(self, msg: Message) -> bool:
        return self._ctx.verifier.verify(self._validators[msg.author], msg.signing_bytes(), msg.signature)

    def _sign(
        self, kind: Kind, round: int, digest: str, prepared_round: int = -1, *, height: int | None = None,
        votes: tuple[Vote, ...] = (), claims: tuple[Claim, ...] = (), block_bytes: bytes = b"",
    ) -> Message:
        me = self._me
        assert me is not None
        at = self._hs.height if height is None else height
        return sign(self._ctx.signer, self._chain_id, kind, at, round, me, digest, prepared_round, votes,
                    claims, block_bytes)

    def _broadcast(self, msg: Message, deliver_self: bool = True) -> None:
        if self._n > 1:
            self._out.append(Broadcast(encode(msg)))
        if deliver_self:
            self._queue.append((msg, True))  # a validator's own message counts towards its own quorums

    def _persist(self) -> None:
        hs = self._hs
        state = HardState(hs.height, hs.round, hs.proposed, hs.prepare_sent, hs.commit_sent,
                          hs.round_change_sent, hs.prepared_round, hs.prepared_hash, hs.prepared_cert)
        puts = {STATE_KEY: state.encode()}
        deletes: tuple[str, ...] = ()
        if hs.prepared_hash != self._disk_block:
            if hs.prepared_block is None:
                deletes = (BLOCK_KEY,)
            else:
                puts[BLOCK_KEY] = hs.prepared_block.encode()
            self._disk_block = hs.prepared_hash
        self._out.append(Persist(puts, deletes))

    def _restore(self, restored: Mapping[str, bytes]) -> None:
        raw_block = restored.get(BLOCK_KEY)
        block: Block | None = None
        if raw_block is not None:
            try:
                block = decode_block(raw_block, memo=self._ctx.decode_memo)
            except Rejected as exc:
                raise ValueError(f"the BFT record {BLOCK_KEY!r} is corrupt: {exc.message}") from exc
            self._disk_block = block.hash
        raw = restored.get(STATE_KEY)
        if raw is None:
            return
        state = decode_state(raw)
        hs = self._hs
        if state.height < hs.height:
            return  # written before the last commit: that height is over
        if state.height > hs.height:
            raise ValueError(f"the BFT hard state is for height {state.height} but the chain tip is "
                             f"{hs.parent.height}: the block store lost committed blocks")
        if any(v.author >= self._n for v in state.prepared_cert):
            raise ValueError("the BFT hard state names a validator outside the validator set")
        hs.round = state.round
        hs.proposed, hs.prepare_sent, hs.commit_sent = state.proposal, state.prepare, state.commit
        hs.round_change_sent = state.round_change
        if state.prepared_hash is not None:
            if block is None or block.hash != state.prepared_hash:
                raise ValueError(f"the BFT record {BLOCK_KEY!r} does not hold the prepared block")
            hs.prepared_round, hs.prepared_hash = state.prepared_round, state.prepared_hash
            hs.prepared_cert = state.prepared_cert
            hs.prepared_block = block
            hs.blocks[block.hash] = block
        hs.active = True
        hs.timer = self._timeout(hs.round)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _drop(self, reason: str) -> None:
        self._count("dropped_" + reason)


def _ignore(_: int) -> None:
    pass


# Charged per buffered message on top of its wire bytes: the decoded message, its signature and
# attachment objects and the index entries cost a few hundred bytes even when the frame is small.
_BUFFER_ENTRY_OVERHEAD_BYTES = 512


def _slot(msg: Message) -> tuple[int, int, int, int]:
    """What one validator signs at most one message for: (kind, height, round, author)."""
    return (msg.kind, msg.height, msg.round, msg.author)


def _coalesce_persists(actions: list[Action]) -> list[Action]:
    """Merge the Persists between two Commits into one, at the first one's place.

    Hard state only grows in knowledge within a height, so writing the last state of a segment
    before the segment's first message keeps every message preceded by the state it depends on,
    at one synced write instead of several. A Commit ends a segment: the next height's state must
    not reach the disk before the block it follows.
    """
    if sum(isinstance(a, Persist) for a in actions) < 2:
        return actions
    out: list[Action] = []
    slot: int | None = None
    puts: dict[str, bytes] = {}
    deletes: dict[str, None] = {}

    def flush() -> None:
        if slot is not None:
            out[slot] = Persist(dict(puts), tuple(deletes))

    for action in actions:
        if isinstance(action, Persist):
            if slot is None:
                slot = len(out)
                out.append(action)
            for key in action.deletes:
                puts.pop(key, None)
                deletes[key] = None
            for key, value in action.puts.items():
                deletes.pop(key, None)
                puts[key] = value
            continue
        if isinstance(action, Commit):
            flush()
            slot, puts, deletes = None, {}, {}
        out.append(action)
    flush()
    return out
