"""The Raft engine: `RaftEngine.step(event) -> actions` (Ongaro & Ousterhout, "In Search of an
Understandable Consensus Algorithm", extended version; section numbers below refer to it).

Log index == block height; `consensus.raft.log` explains the base/retention scheme. Choices that
go beyond the paper, and why:

- Durability. Term, vote and new log entries are written by one `Persist` placed first in the
  action list of the step that changed them, so they are on disk before any message that depends
  on them leaves (§5.1, Figure 2 "persistent state"). Entries are deleted only once committed *and*
  stored (committed in an earlier step), `RaftLimits.retained_entries` blocks behind.
- One block in flight. The runtime builds a proposal on top of its committed state, so a leader
  asks for block h+1 only once h is committed, and every block is built by the executor from
  executed state. A new leader that holds uncommitted entries needs an entry of its own term to
  commit them by the current-term rule (§5.4.2, Figure 8); instead of the paper's empty no-op
  appended above them (whose app hash it could not know without executing them: a height may
  change state by itself, e.g. a validator-set change coming into force), it *re-stamps* its last
  entry: the same block, with its own term (docs/validators.md, "Raft: membership changes").
- Commit certificates. When a leader advances its commit index it signs each newly committed block
  (see `consensus.raft.certificate`); followers receive these signatures in AppendEntries, verify
  them against their own entry, and commit only with one in hand.
- Votes. Besides the §5.4.1 up-to-date rule, a voter also grants when the candidate's committed
  height covers the voter's whole log: committed blocks agree everywhere, so such a candidate holds
  every committed entry the voter holds. This is what lets a node whose log base was reached by
  block sync (entry term unknown) vote and be elected.
- Pre-Vote (dissertation §9.6): a node whose election timer fires first asks whether a majority
  would vote for it, and only then raises its term. Voters refuse while they still hear a leader.
  Without it, nodes that cannot win (shorter logs) keep raising the term and taking votes from
  the one that can; the simulator found clusters that never elected a leader that way.
- Election timeouts back off: each election a node starts without hearing from a leader since the
  last one doubles its randomized range, up to `RaftLimits.max_election_backoff`. Raft assumes
  round trips far shorter than the timeout; when a network breaks that, fixed timeouts let
  candidates time out before their votes arrive, over and over (the simulator found that too).
- Leaders step down when they have not heard from a majority within the maximum election timeout
  (the dissertation's "check quorum"), so a leader cut off in a minority stops claiming to lead.
- Followers do not run `BlockChecker` on entries: every Raft node is trusted, the leader's runtime
  built the block from a state equal to ours, and the runtime executes each committed block anyway;
  a committed block that fails to execute there is a broken invariant and must halt the node.
- A follower the leader can no longer repair from its log gets a `SyncHint`; it reports
  `needs_sync` in `status()` until block sync (`ChainAdvanced`) brings it to that height.
- Validator-set changes (single-server, one at a time, by height): see "the validator set of a
  height" below and docs/validators.md, which proves the rules safe. A chain whose set never
  changes (`validators_at` None) has no horizon, and the engine then works as before.
"""

from __future__ import annotations

import enum
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
from consensus.raft import certificate as cert
from consensus.raft.config import RaftLimits
from consensus.raft.log import (
    BASE_KEY,
    STATE_KEY,
    Base,
    Entry,
    HardState,
    RaftInvariantError,
    RaftLog,
    encode_base,
    encode_entry,
    encode_hard_state,
    entry_key,
    restore,
)
from consensus.raft.messages import (
    AppendEntries,
    AppendResponse,
    CommitSignature,
    MalformedMessage,
    RequestVote,
    SyncHint,
    VoteResponse,
    WrongChain,
    decode_message,
    encode_append_entries,
    encode_append_response,
    encode_request_vote,
    encode_sync_hint,
    encode_vote_response,
)
from ledger.valset import ACTIVATION_DELAY

# Beyond every height: the horizon of a chain whose validator set never changes.
_NO_HORIZON = 2**63


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class _Progress:
    """What a leader knows about one follower (Figure 2 nextIndex/matchIndex, plus its commit)."""

    next_index: int
    match_index: int = 0
    commit_index: int = 0
    heard_tick: int = 0


class RaftEngine:
    """A crash-fault-tolerant engine: one elected leader proposes, a majority commits."""

    def __init__(self, ctx: EngineContext, limits: RaftLimits | None = None) -> None:
        self._ctx = ctx
        self._limits = limits or RaftLimits()
        self._chain_id = ctx.chain_id
        self._me = ctx.signer.node_id
        self._validators = tuple(ctx.validators)
        if len(frozenset(self._validators)) != len(self._validators):
            raise ValueError("validator ids must be distinct")
        if ctx.validators_at is None and self._me not in self._validators:
            raise ValueError(f"node {self._me} is not a validator of chain {ctx.chain_id}")
        # The set of each height, as `EngineContext.validators_at` answered it (fixed once known).
        self._sets: dict[int, tuple[str, ...]] = {}
        self.counters: dict[str, int] = {}

        # On a chain whose set changes, a vote recorded under an older set may name a node that has
        # left it since: the record is checked for form only.
        restored = restore(ctx.restored, ctx.tip, self._validators if ctx.validators_at is None else None)
        self._term = restored.hard_state.term
        self._vote = restored.hard_state.vote
        self._log: RaftLog = restored.log
        self._tip = ctx.tip
        self._commit = ctx.tip.height
        self._stored_commit = self._commit

        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self._votes: set[str] = set()
        self._progress: dict[str, _Progress] = {}
        self._certs: dict[int, CommitSignature] = {}
        self._tick = 0
        self._election_elapsed = 0
        self._backoff = 1
        self._election_timeout = self._random_timeout()
        self._heartbeat_elapsed = 0
        self._leader_since = 0
        self._txs_pending = False
        self._building: tuple[int, int] | None = None
        self._sync_target: int | None = None

        self._hard_dirty = False
        self._base_dirty = restored.base_dirty
        self._puts: dict[str, bytes] = {}
        self._deletes: set[str] = set(restored.stale_keys)
        self._out: list[Action] = []

    # --- introspection ---------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader(self) -> str | None:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def log(self) -> RaftLog:
        return self._log

    def status(self) -> dict[str, Any]:
        voters = self._set_at(self._stored_commit + 1)
        return {
            "engine": "raft",
            "is_validator": self._me in voters,
            "validators": len(voters),
            "max_faulty": (len(voters) - 1) // 2,
            "quorum": len(voters) // 2 + 1,
            "role": self._role.value,
            "term": self._term,
            "leader": self._leader,
            "voted_for": self._vote,
            "commit_height": self._commit,
            "last_index": self._log.last_index,
            "log_base": self._log.base.index,
            "needs_sync": self._sync_target,
        }

    # --- the one entry point ---------------------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        self._out = []
        # Commit actions from earlier steps have been executed by now: those blocks are stored.
        self._stored_commit = self._commit
        if isinstance(event, Tick):
            self._on_tick()
        elif isinstance(event, Received):
            self._on_received(event.sender, event.data)
        elif isinstance(event, TxsAvailable):
            self._txs_pending = True
            self._maybe_propose()
        elif isinstance(event, ProposalBuilt):
            self._on_proposal_built(event)
        elif isinstance(event, ChainAdvanced):
            self._on_chain_advanced(event.tip)
        else:
            raise TypeError(f"not an engine event: {event!r}")
        return self._flush()

    # --- the rules a broken variant in the tests overrides ----------------------------------------

    def _may_commit(self, index: int) -> bool:
        """§5.4.2: a leader commits by counting replicas only an entry of its current term."""
        return self._log.term_at(index) == self._term

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote)

    def _counted_set(self, height: int) -> tuple[str, ...]:
        """The validators whose copies count towards committing the entry at `height`: its set."""
        return self._set_at(height)

    # --- the validator set of a height -----------------------------------------------------------
    #
    # The set C(h) of height h is fixed by the state committed at h - ACTIVATION_DELAY, so this node
    # knows it for every h up to its stored commit + 2, its *horizon*. The rules (docs/validators.md,
    # "Raft", proves them safe):
    # - no log holds an entry above its node's horizon (followers take entries up to it, leaders
    #   append up to it), so every entry's set is known where it is stored;
    # - the entry at h is committed when a majority of C(h) stores it, and a leader commits through
    #   h only when that holds for every height from its commit to h;
    # - a node's election height is the height its first entry as leader would take: its last
    #   index when that entry is uncommitted (it is re-stamped), else the next; at most the
    #   horizon. It campaigns only when it belongs to the set of every height from its commit + 1
    #   to there, and counts (pre-)votes from that height's set only;
    # - a new leader with uncommitted entries re-stamps its last entry with its own term (same
    #   block) rather than appending a no-op above it (see the module docstring);
    # - a leader proposes height h only when it is in C(h), and steps down once it is not;
    # - messages from outside C(stored + 1) and C(stored + 2) are dropped, and a commit signature
    #   counts only from a member of its height's set.

    def _set_at(self, height: int) -> tuple[str, ...]:
        if self._ctx.validators_at is None:
            return self._validators
        known = self._sets.get(height)
        if known is None:
            if height > self._horizon():
                raise RaftInvariantError(f"raft: the validator set of height {height} is not known at "
                                         f"stored height {self._stored_commit}")
            known = tuple(self._ctx.validators_at(height))
            if not known or len(frozenset(known)) != len(known):
                raise RaftInvariantError(f"raft: the validator set of height {height} is empty or repeats an id")
            self._sets[height] = known
            if len(self._sets) > 16:
                for old in [h for h in self._sets if h <= self._stored_commit - 4]:
                    del self._sets[old]
        return known

    def _horizon(self) -> int:
        """The highest height whose set this node knows, hence the highest index its log may hold."""
        return _NO_HORIZON if self._ctx.validators_at is None else self._stored_commit + ACTIVATION_DELAY

    def _members(self) -> tuple[str, ...]:
        """Every validator of the heights this node may still decide: C(stored + 1), then the
        newcomers of C(stored + 2) (learners for stored + 1: replicated to, not counted)."""
        first = self._set_at(self._stored_commit + 1)
        if self._ctx.validators_at is None:
            return first
        return first + tuple(v for v in self._set_at(self._stored_commit + 2) if v not in first)

    def _peers(self) -> tuple[str, ...]:
        return tuple(v for v in self._members() if v != self._me)

    def _election_height(self) -> int:
        """The height of this node's first entry if it won now: its last entry, re-stamped, when that
        is uncommitted (`_become_leader`), else the next height; never above the horizon."""
        last = self._log.last_index
        return min(last if last > self._commit else last + 1, self._horizon())

    def _electorate(self) -> tuple[str, ...]:
        return self._set_at(self._election_height())

    def _eligible(self) -> bool:
        """May this node lead: is it in the set of every height from its commit + 1 to its election
        height (its no-op or re-stamped entry, and every older entry it would commit)?"""
        top = self._election_height()
        return all(self._me in self._set_at(h) for h in range(min(self._commit + 1, top), top + 1))

    def _has_majority(self, voters: set[str], electorate: tuple[str, ...]) -> bool:
        return sum(1 for v in electorate if v in voters) >= len(electorate) // 2 + 1

    # --- time ----------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self._tick += 1
        if self._role is Role.LEADER:
            if not self._check_quorum():
                return
            self._maybe_step_down()
            if self._role is not Role.LEADER:
                return
            self._maybe_propose()  # a proposal that waited for its commit to be stored
            self._heartbeat_elapsed += 1
            if self._heartbeat_elapsed >= max(1, self._ctx.config.heartbeat_ticks):
                self._heartbeat_elapsed = 0
                self._replicate_all()
            return
        self._election_elapsed += 1
        if not self._eligible():
            # A learner (added, not yet in force), a removed validator or an observer: it follows
            # the leader's appends or block sync, and never campaigns.
            # Its timer keeps running (appends from a leader reset it): the lease by which it refuses
            # pre-votes must expire when the leader is gone, or a set whose new member it is (it
            # votes there) could never elect anyone.
            if self._role is not Role.FOLLOWER:
                self._become_follower(self._term, None)
            return
        if self._leader is not None and self._leader not in self._set_at(self._stored_commit + 1):
            # Our leader has left the set: it has stepped down (or will not be heard any more), so
            # elect another without waiting a full timeout (the hand-over). The remaining
            # validators go in their order in the set, one minimum election timeout apart, so
            # that they do not split the vote; they see the change at the same height and drop
            # the old leader (and its lease) too, so they grant.
            self._count("leader_left_set")
            self._leader = None
            self._election_elapsed = 0
            remaining = self._set_at(self._stored_commit + 1)
            self._election_timeout = 1 + remaining.index(self._me) * max(
                1, self._ctx.config.election_timeout_min_ticks)
        if self._electorate() == (self._me,) or self._election_elapsed >= self._election_timeout:
            if self._role is not Role.FOLLOWER:  # our last election came to nothing
                self._backoff = min(2 * self._backoff, self._limits.max_election_backoff)
            # Counted whether or not a term follows (without a reachable majority pre-vote stops it):
            # the node's liveness report counts these since the last commit.
            self._count("election_timeouts")
            self._pre_campaign()

    def _random_timeout(self) -> int:
        low = max(1, self._ctx.config.election_timeout_min_ticks)
        high = max(low + 1, self._ctx.config.election_timeout_max_ticks)
        return self._ctx.rng.randrange(low * self._backoff, high * self._backoff)

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        self._election_timeout = self._random_timeout()

    def _check_quorum(self) -> bool:
        window = max(2, self._ctx.config.election_timeout_max_ticks)
        if self._tick - self._leader_since < window:
            return True
        heard = {p for p, prog in self._progress.items() if self._tick - prog.heard_tick < window}
        if self._has_majority(heard | {self._me}, self._electorate()):
            return True
        self._count("leader_lost_quorum")
        self._become_follower(self._term, None)
        return False

    # --- roles ---------------------------------------------------------------------------------

    def _pre_campaign(self) -> None:
        """Pre-Vote (dissertation §9.6): ask first whether a majority would vote for us in the next
        term. A node that cannot win (its log is behind, or the others still hear a leader) then
        never raises the term, so it cannot disrupt a leader or steal votes from one that can win."""
        self._role = Role.PRE_CANDIDATE
        self._leader = None
        self._votes = {self._me}
        self._building = None
        self._reset_election_timer()
        if self._has_majority(self._votes, self._electorate()):
            self._campaign()
            return
        ask = RequestVote(self._me, self._term + 1, self._log.last_index, self._log.last_term, self._commit,
                          pre=True)
        self._out.append(Broadcast(encode_request_vote(self._chain_id, ask)))

    def _campaign(self) -> None:
        """§5.2: increment the term, vote for yourself, ask everyone else."""
        self._term += 1
        self._vote = self._me
        self._hard_dirty = True
        self._role = Role.CANDIDATE
        self._leader = None
        self._votes = {self._me}
        self._building = None
        self._reset_election_timer()
        self._count("elections_started")
        if self._has_majority(self._votes, self._electorate()):
            self._become_leader()
            return
        vote = RequestVote(self._me, self._term, self._log.last_index, self._log.last_term, self._commit)
        self._out.append(Broadcast(encode_request_vote(self._chain_id, vote)))

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term > self._term:
            self._term = term
            self._vote = None
            self._hard_dirty = True
        if self._role is not Role.FOLLOWER:
            # A plain follower keeps its timer on a term change: otherwise a candidate that keeps
            # losing could hold every other node's election off indefinitely.
            self._reset_election_timer()
        self._role = Role.FOLLOWER
        self._leader = leader
        self._votes = set()
        self._progress = {}
        self._building = None

    def _become_leader(self) -> None:
        if not self._eligible():  # block sync moved this node's sets on during the election
            self._count("not_eligible")
            self._become_follower(self._term, None)
            return
        self._role = Role.LEADER
        self._leader = self._me
        self._backoff = 1
        self._votes = set()
        self._leader_since = self._tick
        self._heartbeat_elapsed = 0
        self._progress = {}
        self._sync_progress()
        self._txs_pending = True  # look at the mempool once; it may have filled while we followed
        self._count("became_leader")
        if self._log.last_index > self._commit:
            self._restamp_last()
        self._replicate_all()
        self._maybe_commit()
        self._maybe_propose()

    # --- peer messages -------------------------------------------------------------------------

    def _on_received(self, sender: str, data: bytes) -> None:
        if sender not in self._members():
            self._count("not_validator")
            return
        if sender == self._me:
            self._count("from_self")
            return
        try:
            msg = decode_message(data, self._chain_id, self._limits.max_append_entries,
                                 self._ctx.config.max_block_bytes, self._ctx.decode_memo)
        except WrongChain:
            self._count("wrong_chain_id")
            return
        except MalformedMessage:
            self._count("malformed")
            return
        if msg.sender != sender:
            self._count("sender_mismatch")
            return
        if isinstance(msg, RequestVote) and msg.pre:
            self._on_pre_vote(sender, msg)  # its term is hypothetical: it changes nothing here
            return
        if isinstance(msg, VoteResponse) and msg.pre and msg.granted:
            self._on_pre_vote_granted(sender, msg)
            return
        if msg.term > self._term:
            # §5.1: a higher term makes any node a follower in that term.
            from_leader = isinstance(msg, (AppendEntries, SyncHint))
            self._become_follower(msg.term, sender if from_leader else None)
        if isinstance(msg, RequestVote):
            self._on_request_vote(sender, msg)
        elif isinstance(msg, VoteResponse):
            if not msg.pre:  # a refused pre-vote only mattered for the term it carried
                self._on_vote_response(sender, msg)
        elif isinstance(msg, AppendEntries):
            self._on_append_entries(sender, msg)
        elif isinstance(msg, AppendResponse):
            self._on_append_response(sender, msg)
        else:
            self._on_sync_hint(sender, msg)

    def _on_request_vote(self, sender: str, m: RequestVote) -> None:
        if m.term < self._term:
            self._count("stale_term")
            self._answer_vote(sender, False)
            return
        # (A node that follows this term's leader has recorded it as its vote: see _accept_leader.)
        grant = self._vote in (None, sender) and self._me in self._members() and self._candidate_log_ok(m)
        if grant:
            if self._vote != sender:
                self._vote = sender
                self._hard_dirty = True
            self._election_elapsed = 0
        else:
            self._count("vote_refused")
        self._answer_vote(sender, grant)

    def _answer_vote(self, candidate: str, granted: bool) -> None:
        answer = VoteResponse(self._me, self._term, candidate, granted)
        self._send(candidate, encode_vote_response(self._chain_id, answer))

    def _on_pre_vote(self, sender: str, m: RequestVote) -> None:
        # Refuse while we lead or have heard from a leader within the minimum election timeout:
        # the leader is alive, so an election now would only disrupt it.
        heard_leader = self._role is Role.LEADER or (
            self._leader is not None and self._election_elapsed < self._ctx.config.election_timeout_min_ticks)
        grant = m.term > self._term and not heard_leader and self._me in self._members() \
            and self._candidate_log_ok(m)
        if not grant:
            self._count("pre_vote_refused")
        answer = VoteResponse(self._me, m.term if grant else self._term, sender, grant, pre=True)
        self._send(sender, encode_vote_response(self._chain_id, answer))

    def _on_pre_vote_granted(self, sender: str, m: VoteResponse) -> None:
        if self._role is not Role.PRE_CANDIDATE or m.term != self._term + 1 or m.candidate != self._me:
            self._count("stale_vote")
            return
        self._votes.add(sender)
        if self._has_majority(self._votes, self._electorate()):
            self._campaign()

    def _candidate_log_ok(self, m: RequestVote) -> bool:
        my_last = self._log.last_index
        if m.commit >= my_last:
            return True  # the candidate's committed chain contains every committed entry we hold
        my_term = self._log.last_term
        if my_term is None or m.last_term is None:
            return False
        return (m.last_term, m.last_index) >= (my_term, my_last)  # §5.4.1

    def _on_vote_response(self, sender: str, m: VoteResponse) -> None:
        if self._role is not Role.CANDIDATE or m.term != self._term or m.candidate != self._me:
            self._count("stale_vote")
            return
        if m.granted:
            self._votes.add(sender)
            if self._has_majority(self._votes, self._electorate()):
                self._become_leader()

    def _accept_leader(self, sender: str) -> bool:
        """Called for AppendEntries/SyncHint of our current term; False when it must be dropped."""
        if self._role is Role.LEADER:
            # Two leaders in one term would break Election Safety (§5.2): a bug or a lost vote.
            self._count("second_leader_in_term")
            return False
        if self._role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._become_follower(self._term, sender)
        self._leader = sender
        if self._vote is None:
            # Following the leader of a term counts as this node's vote in it, durably: it grants
            # no other vote in that term, even after a restart (as etcd refuses votes while it
            # has a leader). On a chain whose set changes this is what keeps a candidate that
            # learned later commits by block sync from winning the term those commits were made in
            # (docs/validators.md, "Raft: membership changes").
            self._vote = sender
            self._hard_dirty = True
        self._election_elapsed = 0
        if self._backoff > 1:
            self._backoff = 1
            self._election_timeout = self._random_timeout()
        return True

    def _on_append_entries(self, sender: str, m: AppendEntries) -> None:
        if m.term < self._term:
            self._count("stale_term")
            self._reply_append(sender, False, m.prev_index, 0)
            return
        if not self._well_formed(m):
            self._count("malformed")
            return
        if not self._accept_leader(sender):
            return
        log = self._log
        prev, entries = m.prev_index, list(m.entries)
        if prev < self._commit:
            skip = self._commit - prev
            if len(entries) < skip:
                # Everything it carries is committed here already; committed entries are the same
                # on every log (§5.4), so ours match the leader's up to our commit.
                self._reply_append(sender, True, self._commit, 0)
                return
            if entries[skip - 1].block.hash != log.hash_at(self._commit):
                self._count("conflicts_with_commit")
                return
            entries, prev = entries[skip:], self._commit
        elif prev == self._commit:
            if m.prev_hash != log.hash_at(prev):
                self._count("conflicts_with_commit")
                return
        else:
            if prev > log.last_index:
                self._count("append_rejected")
                self._reply_append(sender, False, prev, log.last_index)
                return
            if m.prev_term is None or log.term_at(prev) != m.prev_term:
                self._count("append_rejected")
                self._reply_append(sender, False, prev, self._conflict_hint(prev, m.prev_term))
                return
            if log.hash_at(prev) != m.prev_hash:
                self._count("conflicting_entry")
                return
        room = self._horizon() - prev
        if len(entries) > room:
            # Entries above the horizon would have no known set here: taken once commits catch up.
            entries = entries[:max(0, room)]
            self._count("entries_above_horizon")
        for k, wire in enumerate(entries):
            index = prev + 1 + k
            if index <= log.last_index:
                if log.term_at(index) == wire.term:
                    if log.hash_at(index) != wire.block.hash:
                        self._count("conflicting_entry")
                        return
                    continue
                self._truncate_from(index)  # §5.3: a conflicting entry and all that follow it go
            self._append(Entry(wire.term, wire.block))
        match = prev + len(entries)
        self._accept_certs(m.certs)
        target = min(m.commit, match)
        if target > self._commit:
            self._advance_commit(target)
        self._reply_append(sender, True, match, 0)

    def _well_formed(self, m: AppendEntries) -> bool:
        """The entries form a chain on `prev_hash`, at consecutive heights, with sane terms."""
        prev_hash, prev_term = m.prev_hash, m.prev_term or 0
        for k, wire in enumerate(m.entries):
            header = wire.block.header
            if header.height != m.prev_index + 1 + k or header.prev_hash != prev_hash \
                    or header.chain_id != self._chain_id or not prev_term <= wire.term <= m.term:
                return False
            prev_hash, prev_term = wire.block.hash, wire.term
        return True

    def _conflict_hint(self, prev: int, prev_term: int | None) -> int:
        """The highest index that might still match: entries of a term newer than the leader's
        entry at `prev` cannot be in the leader's log there."""
        if prev_term is None:
            return self._commit
        index = prev - 1
        while index > self._commit:
            term = self._log.term_at(index)
            if term is not None and term <= prev_term:
                break
            index -= 1
        return index

    def _accept_certs(self, certs: tuple[CommitSignature, ...]) -> None:
        for c in certs:
            if c.index <= self._commit or c.index > self._log.last_index or c.index in self._certs:
                continue
            if c.leader not in self._set_at(c.index) or not cert.verify_signature(
                    self._ctx.verifier, self._chain_id, c.index, self._log.hash_at(c.index), c.term, c.leader,
                    c.signature):
                self._count("bad_certificate")
                continue
            self._certs[c.index] = c

    def _on_sync_hint(self, sender: str, m: SyncHint) -> None:
        if m.term < self._term:
            self._count("stale_term")
            self._reply_append(sender, False, self._log.last_index + 1, self._log.last_index)
            return
        if not self._accept_leader(sender):
            return
        if m.height > self._commit:
            self._sync_target = max(m.height, self._sync_target or 0)
            self._count("sync_hints")
        self._reply_append(sender, False, self._log.last_index + 1, self._log.last_index)

    def _on_append_response(self, sender: str, m: AppendResponse) -> None:
        if self._role is not Role.LEADER or m.term != self._term:
            self._count("stale_response")
            return
        prog = self._progress.get(sender)
        if prog is None:  # it has left the set, or joins it later
            self._count("stale_response")
            return
        prog.heard_tick = self._tick
        before = (prog.match_index, prog.commit_index)
        prog.commit_index = max(prog.commit_index, m.commit)
        if m.success:
            if m.index > self._log.last_index:
                self._count("bad_response")
                return
            prog.match_index = max(prog.match_index, m.index)
            prog.next_index = max(prog.next_index, prog.match_index + 1)
            self._maybe_commit()
            # More to send: at once, when this answer moved the follower on (else the heartbeat
            # repeats it; a follower that took nothing new must not start a ping-pong).
            if self._role is Role.LEADER and prog.next_index <= self._log.last_index \
                    and (prog.match_index, prog.commit_index) != before and sender in self._progress:
                self._send_append(sender)
            return
        if m.index <= prog.match_index:
            self._count("stale_response")
            return
        old = prog.next_index
        prog.next_index = max(prog.match_index + 1, min(m.index, m.hint + 1, self._log.last_index + 1))
        # Probe again at once only with a real AppendEntries: answering a SyncHint reply with
        # another SyncHint would ping-pong; the heartbeat repeats those.
        if prog.next_index != old and prog.next_index - 1 >= self._log.base.index:
            self._send_append(sender)

    # --- the leader's side ---------------------------------------------------------------------

    def _maybe_propose(self) -> None:
        if self._role is not Role.LEADER or not self._txs_pending or self._building is not None:
            return
        if self._log.last_index != self._commit:
            return  # one block in flight: the runtime builds on committed state only
        height = self._commit + 1
        if height > self._horizon():
            return  # the commit is not stored yet; asked again at the next tick
        if self._maybe_step_down():
            return
        self._building = (height, self._term)
        self._out.append(BuildProposal(height, self._term, self._tip))

    def _on_proposal_built(self, ev: ProposalBuilt) -> None:
        if self._building != (ev.height, ev.round):
            self._count("stale_proposal")
            return
        self._building = None
        if ev.block is None:
            self._txs_pending = False
            return
        header = ev.block.header
        if header.height != ev.height or header.prev_hash != self._tip.block_hash \
                or header.chain_id != self._chain_id or header.proposer != self._me \
                or len(ev.block.encode()) > self._ctx.config.max_block_bytes:
            raise RaftInvariantError(f"the runtime's block does not answer BuildProposal({ev.height})")
        self._append(Entry(self._term, ev.block))
        self._replicate_all()
        self._maybe_commit()

    def _maybe_step_down(self) -> bool:
        """When the set of the next height no longer holds this leader and everything it appended
        is committed (one block in flight), it stops leading, idle or not; the remaining validators
        elect one of theirs when their election timeout runs out. True when it stepped down."""
        height = self._commit + 1
        if self._role is not Role.LEADER or self._log.last_index != self._commit or height > self._horizon() \
                or self._me in self._set_at(height):
            return False
        self._count("left_validator_set")
        self._become_follower(self._term, None)
        self._election_elapsed = 0
        return True

    def _restamp_last(self) -> None:
        """The new leader's entry of its own term (what the paper's no-op is for, §5.4.2) at its last
        index rather than above it: a block above would need the state after the uncommitted ones
        (which this node has not executed) for its app hash, and may lie above the horizon, where
        the set is not known yet. The block stays the same, only its term changes; see
        docs/validators.md."""
        entry = self._log.entry(self._log.last_index)
        self._truncate_from(entry.index)
        self._append(Entry(self._term, entry.block))
        self._count("restamped_entries")

    def _sync_progress(self) -> None:
        """Follow the set: a newcomer gets a progress record (probed from the end of the log), a
        validator that left loses its own."""
        peers = self._peers()
        for gone in [p for p in self._progress if p not in peers]:
            del self._progress[gone]
        for peer in peers:
            if peer not in self._progress:
                self._progress[peer] = _Progress(next_index=self._log.last_index + 1, heard_tick=self._tick)

    def _replicate_all(self) -> None:
        self._sync_progress()
        for peer in self._progress:
            self._send_append(peer)

    def _send_append(self, peer: str) -> None:
        log, prog = self._log, self._progress[peer]
        prog.next_index = min(prog.next_index, log.last_index + 1)
        prev = prog.next_index - 1
        if prev < log.base.index:
            hint = SyncHint(self._me, self._term, self._commit, log.hash_at(self._commit))
            self._send(peer, encode_sync_hint(self._chain_id, hint))
            return
        entries = []
        # A follower takes entries up to its horizon only: its commit (as last reported) + 2.
        room = self._limits.max_append_entries if self._ctx.validators_at is None \
            else min(self._limits.max_append_entries, prog.commit_index + ACTIVATION_DELAY - prev)
        if prog.next_index <= log.last_index and room > 0:
            entries = log.slice(prog.next_index, room, self._limits.max_append_bytes)
        last_sent = prev + len(entries)
        low = max(prog.commit_index, log.base.index) + 1
        high = min(self._commit, max(last_sent, prog.match_index), low + self._limits.max_append_entries - 1)
        certs = [self._commit_signature(i, self._commit) for i in range(low, high + 1)]
        data = encode_append_entries(
            self._chain_id, self._me, self._term, prev, log.term_at(prev), log.hash_at(prev), self._commit,
            [(e.term, e.block.encode()) for e in entries], certs)
        prog.next_index = last_sent + 1  # optimistic: a loss shows up as a rejection and is re-sent
        self._send(peer, data)

    def _commit_signature(self, index: int, committed: int) -> CommitSignature:
        """The signature that `index` (at or below `committed`) is committed: one we hold, or ours
        as leader now."""
        sig = self._certs.get(index)
        if sig is None:
            if self._role is not Role.LEADER or index > committed:
                raise RaftInvariantError(f"only the leader signs, and only committed entries ({index})")
            block_hash = self._log.hash_at(index)
            signature = cert.sign_commit(self._ctx.signer, self._chain_id, index, block_hash, self._term)
            sig = CommitSignature(index, self._term, self._me, signature)
            self._certs[index] = sig
        return sig

    def _maybe_commit(self) -> None:
        """Figure 2: the highest index stored on a majority, if it is of the current term."""
        if self._role is not Role.LEADER:
            return
        self._sync_progress()
        matches = {p: prog.match_index for p, prog in self._progress.items()}
        matches[self._me] = self._log.last_index
        index = self._commit
        # The highest index such that the entry of every height up to it is stored on a majority
        # of that height's set (the sets of two heights differ by one validator at most).
        for height in range(self._commit + 1, min(self._log.last_index, self._horizon()) + 1):
            counted = self._counted_set(height)
            if sum(1 for v in counted if matches.get(v, 0) >= height) < len(counted) // 2 + 1:
                break
            index = height
        while index > self._commit and not self._may_commit(index):
            index -= 1  # §5.4.2: commit by counting only through an entry of the current term
        if index > self._commit and self._may_commit(index):
            self._advance_commit(index)
            self._replicate_all()  # tell followers now rather than at the next heartbeat
            self._maybe_propose()

    # --- both sides ----------------------------------------------------------------------------

    def _advance_commit(self, index: int) -> None:
        for height in range(self._commit + 1, index + 1):
            if self._role is Role.LEADER:
                sig = self._commit_signature(height, index)
            elif height in self._certs:
                sig = self._certs[height]
            else:
                break  # the leader sends the signature with a later AppendEntries
            block = self._log.entry(height).block
            self._out.append(Commit(block, cert.make_certificate(sig.term, sig.leader, sig.signature)))
            self._commit = height
            self._tip = ChainTip(height, block.hash, block.header.timestamp, block.header.app_hash)
        if self._sync_target is not None and self._commit >= self._sync_target:
            self._sync_target = None

    def _on_chain_advanced(self, tip: ChainTip) -> None:
        if tip.height <= self._commit:
            self._count("stale_chain_advanced")
            return
        log = self._log
        if not (log.first_index <= tip.height <= log.last_index
                and log.hash_at(tip.height) == tip.block_hash):
            # Committed blocks we never had (or that replace our uncommitted tail) were fetched by
            # block sync: the log restarts from them, with the term of the new base unknown.
            for index in log.reset(Base(tip.height, None, tip.block_hash)):
                self._delete_entry(index)
            self._certs.clear()
            self._base_dirty = True
            if self._role is not Role.FOLLOWER:
                self._count("stepped_down_behind_chain")
                self._become_follower(self._term, None)
        if self._role in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            # The election counted the set of a height fixed by the stored commit it started from;
            # that has moved, so this election is given up (the timer starts another).
            self._count("election_abandoned_for_sync")
            self._become_follower(self._term, None)
        self._commit = tip.height
        self._stored_commit = tip.height  # block sync stored them before telling the engine
        self._tip = tip
        for index in [i for i in self._certs if i <= tip.height]:
            del self._certs[index]
        if self._sync_target is not None and self._commit >= self._sync_target:
            self._sync_target = None
        self._maybe_propose()

    def _append(self, entry: Entry) -> None:
        self._log.append(entry)
        key = entry_key(entry.index)
        self._deletes.discard(key)
        self._puts[key] = encode_entry(entry)

    def _truncate_from(self, index: int) -> None:
        if index <= self._commit:
            raise RaftInvariantError(f"raft: refusing to truncate committed entry {index}")
        for removed in self._log.truncate_from(index):
            self._delete_entry(removed)
            self._certs.pop(removed, None)

    def _delete_entry(self, index: int) -> None:
        key = entry_key(index)
        self._puts.pop(key, None)
        self._deletes.add(key)

    def _reply_append(self, to: str, success: bool, index: int, hint: int) -> None:
        msg = AppendResponse(self._me, self._term, success, index, hint, self._commit)
        self._send(to, encode_append_response(self._chain_id, msg))

    def _send(self, to: str, data: bytes) -> None:
        self._out.append(Send(to, data))

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _flush(self) -> list[Action]:
        """Put one Persist in front of everything this step produced."""
        out, self._out = self._out, []
        if self._puts:
            # Entries are appended in this step, so compact now: only what earlier steps committed
            # (hence the runtime has stored) and that is more than `retained_entries` behind.
            target = self._stored_commit - self._limits.retained_entries
            if target > self._log.base.index:
                for index in self._log.compact_to(target):
                    self._delete_entry(index)
                    self._certs.pop(index, None)
                self._base_dirty = True
        puts = dict(self._puts)
        if self._hard_dirty:
            puts[STATE_KEY] = encode_hard_state(self._hard_state())
        if self._base_dirty and (puts or self._deletes):
            # Written with the first log change rather than on its own: a fresh node's base is
            # derived from the block store's tip anyway.
            puts[BASE_KEY] = encode_base(self._log.base)
        deletes = tuple(sorted(self._deletes - puts.keys()))
        if BASE_KEY in puts:
            self._base_dirty = False
        self._puts, self._deletes = {}, set()
        self._hard_dirty = False
        if puts or deletes:
            out.insert(0, Persist(puts, deletes))
        return out
