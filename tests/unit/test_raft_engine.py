"""The Raft engine driven by hand: several engines, messages delivered (or not) one by one.

Each test names the rule from the Raft paper (Ongaro & Ousterhout, extended version) it checks.
The deterministic simulator (tests/sim) explores the same engine under random faults; these tests
pin down specific scenarios, including the paper's Figure 8.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from consensus.api import (
    Action,
    Broadcast,
    BuildProposal,
    ChainAdvanced,
    ChainTip,
    Commit,
    Ed25519Signer,
    Ed25519Verifier,
    EngineConfig,
    EngineContext,
    Event,
    Persist,
    ProposalBuilt,
    Received,
    Send,
    Tick,
    TxsAvailable,
)
from consensus.raft import RaftEngine, RaftLimits, Role, verify_certificate
from consensus.raft.log import STATE_KEY, entry_key
from consensus.raft.messages import (
    APPEND_ENTRIES,
    PRE_VOTE,
    PRE_VOTE_RESPONSE,
    REQUEST_VOTE,
    VOTE_RESPONSE,
    AppendEntries,
    RequestVote,
    SyncHint,
    VoteResponse,
    decode_message,
    encode_request_vote,
)
from ledger import keys
from ledger.block import Block, make_block
from ledger.state import chain_app_hash
from ledger.tx import Record, sign_tx

CHAIN = "raft-test"
GENESIS = ChainTip(0, "ab" * 32, 1_700_000_000_000, "cd" * 32)
Keep = Callable[[str, str, bytes], bool]  # (from, to, data) -> deliver it?
CLIENT = keys.PrivateKey.from_seed(b"client".ljust(32, b"\x00"))


def node_key(i: int) -> keys.PrivateKey:
    return keys.PrivateKey.from_seed(b"raft-node".ljust(28, b"\x00") + i.to_bytes(4, "big"))


class AcceptAll:
    def check_block(self, block: Block, parent: ChainTip) -> str | None:
        return None


def tip_of(block: Block) -> ChainTip:
    return ChainTip(block.height, block.hash, block.header.timestamp, block.header.app_hash)


@dataclass
class Node:
    """One validator: its engine plus what survives a crash (records, committed blocks)."""

    key: keys.PrivateKey
    cluster: Cluster
    records: dict[str, bytes] = field(default_factory=dict)
    committed: list[tuple[Block, dict[str, Any]]] = field(default_factory=list)
    builds: list[BuildProposal] = field(default_factory=list)
    steps: list[tuple[Event, list[Action]]] = field(default_factory=list)
    mempool: int = 0  # how many more blocks' worth of transactions the node's mempool holds
    engine: RaftEngine = field(init=False)
    up: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.engine = self.cluster.make_engine(self)

    @property
    def id(self) -> str:
        return self.key.address

    @property
    def tip(self) -> ChainTip:
        return tip_of(self.committed[-1][0]) if self.committed else GENESIS


class Cluster:
    def __init__(self, n: int, *, auto_build: bool = True, limits: RaftLimits | None = None,
                 engine_class: type[RaftEngine] = RaftEngine, config: EngineConfig | None = None) -> None:
        self.auto_build = auto_build
        self.limits = limits or RaftLimits()
        self.engine_class = engine_class
        self.config = config or EngineConfig()
        self.keys = [node_key(i) for i in range(n)]
        self.ids = [k.address for k in self.keys]
        self.net: list[tuple[str, str, bytes]] = []  # (from, to, data) in flight
        self.salt = 0
        self.nodes = [Node(k, self, seed=i) for i, k in enumerate(self.keys)]

    def make_engine(self, node: Node) -> RaftEngine:
        ctx = EngineContext(CHAIN, self.ids, Ed25519Signer(node.key), Ed25519Verifier(), AcceptAll(),
                            node.tip, random.Random(node.seed), dict(node.records), self.config)
        node.seed += 1000
        return self.engine_class(ctx, self.limits)

    def node(self, i: int) -> Node:
        return self.nodes[i]

    def by_id(self, node_id: str) -> Node:
        return self.nodes[self.ids.index(node_id)]

    # --- executing actions, as the runtime does ----------------------------------------------------

    def step(self, node: Node, event: Event) -> list[Action]:
        """One event in, its actions executed in order; then (auto_build) answer BuildProposal."""
        assert node.up
        actions = node.engine.step(event)
        node.steps.append((event, actions))
        for action in actions:
            self.execute(node, action)
        while self.auto_build and node.builds and node.up:
            self.build(node, empty=node.mempool == 0)
        return actions

    def submit(self, i: int, blocks: int = 1) -> list[Action]:
        """Transactions for `blocks` more blocks reach node i's mempool."""
        self.nodes[i].mempool += blocks
        return self.step(self.nodes[i], TxsAvailable())

    def execute(self, node: Node, action: Action) -> None:
        if isinstance(action, Persist):
            node.records.update(action.puts)
            for key in action.deletes:
                node.records.pop(key, None)
        elif isinstance(action, Send):
            self.net.append((node.id, action.to, action.data))
        elif isinstance(action, Broadcast):
            self.net += [(node.id, other, action.data) for other in self.ids if other != node.id]
        elif isinstance(action, BuildProposal):
            assert action.parent == node.tip, "a proposal is always built on the committed tip"
            node.builds.append(action)
        elif isinstance(action, Commit):
            block = action.block
            assert block.height == node.tip.height + 1 and block.header.prev_hash == node.tip.block_hash
            assert verify_certificate(block, action.certificate, self.ids, Ed25519Verifier())
            node.committed.append((block, action.certificate))

    def build(self, node: Node, empty: bool = False) -> list[Action]:
        """Answer the node's oldest BuildProposal with a fresh block (or with nothing)."""
        req = node.builds.pop(0)
        if empty:
            return self.step(node, ProposalBuilt(req.height, req.round, None))
        node.mempool = max(0, node.mempool - 1)
        self.salt += 1
        tx = sign_tx(CLIENT, CHAIN, self.salt, Record("k", f"{node.id[:6]}-{req.height}-{self.salt}"))
        parent = req.parent
        block = make_block(CHAIN, req.height, parent.block_hash, parent.timestamp + self.salt, node.id, (tx,),
                           chain_app_hash(parent.app_hash, {b"x": str(self.salt).encode()}))
        return self.step(node, ProposalBuilt(req.height, req.round, block))

    # --- the network -----------------------------------------------------------------------------

    def deliver(self, keep: Keep = lambda f, t, d: True, limit: int = 10_000) -> int:
        """Deliver in-flight messages (and those they cause) until none is left; `keep` False drops."""
        delivered = 0
        while self.net and delivered < limit:
            frm, to, data = self.net.pop(0)
            dest = self.by_id(to)
            if not dest.up or not self.by_id(frm).up or not keep(frm, to, data):
                continue
            delivered += 1
            self.step(dest, Received(frm, data))
        assert delivered < limit, "message storm"
        return delivered

    def tick(self, *indexes: int) -> None:
        for i in indexes or range(len(self.nodes)):
            if self.nodes[i].up:
                self.step(self.nodes[i], Tick())

    def age(self, skip: int) -> None:
        """Time passes for every node but `skip` and all they send is lost, so none of them still
        counts on a leader it heard from (the Pre-Vote lease)."""
        in_flight = len(self.net)
        for _ in range(self.config.election_timeout_min_ticks):
            for j, node in enumerate(self.nodes):
                if j != skip and node.up:
                    self.step(node, Tick())
        del self.net[in_flight:]

    def campaign(self, i: int) -> None:
        """Make node i a candidate: time out, then exchange pre-votes only; its RequestVotes and
        anything else stay in flight."""
        node = self.nodes[i]
        self.age(i)
        while node.engine.role is not Role.PRE_CANDIDATE:
            self.tick(i)
        while node.engine.role is Role.PRE_CANDIDATE:
            k = next(k for k, (f, t, d) in enumerate(self.net) if d[5] in (PRE_VOTE, PRE_VOTE_RESPONSE))
            frm, to, data = self.net.pop(k)
            self.step(self.by_id(to), Received(frm, data))
        assert node.engine.role is Role.CANDIDATE

    def elect(self, i: int, keep: Keep = lambda f, t, d: True) -> None:
        """Tick node i alone (delivering what `keep` lets through) until it wins an election."""
        node = self.nodes[i]
        self.age(i)
        for _ in range(200):
            self.tick(i)
            self.deliver(keep)
            if node.engine.role is Role.LEADER:
                return
        raise AssertionError(f"node {i} was not elected: {node.engine.status()}")

    def run(self, rounds: int, keep: Keep = lambda f, t, d: True) -> None:
        for _ in range(rounds):
            self.tick()
            self.deliver(keep)

    def crash(self, i: int) -> None:
        self.nodes[i].up = False
        self.nodes[i].builds.clear()

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        node.up = True
        node.engine = self.make_engine(node)

    def committed_hashes(self, i: int) -> list[str]:
        return [b.hash for b, _ in self.nodes[i].committed]

    def assert_agreement(self) -> None:
        """State Machine Safety (§5.4.3): no two nodes commit different blocks at one height."""
        by_height: dict[int, str] = {}
        for node in self.nodes:
            for block, _ in node.committed:
                first = by_height.setdefault(block.height, block.hash)
                assert first == block.hash, f"conflict at {block.height}"


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def link(cluster: Cluster, *pairs: tuple[int, int]) -> Keep:
    allowed = {frozenset((cluster.ids[a], cluster.ids[b])) for a, b in pairs}
    return lambda frm, to, data: frozenset((frm, to)) in allowed


def among(cluster: Cluster, *members: int) -> Keep:
    inside = {cluster.ids[m] for m in members}
    return lambda frm, to, data: frm in inside and to in inside


# --- single node -----------------------------------------------------------------------------------


def test_single_node_elects_itself_and_commits_right_after_persisting() -> None:
    c = Cluster(1)
    n = c.node(0)
    c.tick(0)
    assert n.engine.role is Role.LEADER and n.engine.term == 1
    assert kinds(c.submit(0)) == ["BuildProposal"]
    built = [actions for event, actions in n.steps if isinstance(event, ProposalBuilt)]
    # The entry is persisted, then committed at once (a majority of one), then the next block asked for.
    assert kinds(built[-2]) == ["Persist", "Commit", "BuildProposal"]
    assert built[-1] == []  # the mempool was empty: nothing more until TxsAvailable
    assert n.engine.commit_index == 1 and len(n.committed) == 1
    cert = n.committed[0][1]
    assert cert["engine"] == "raft" and cert["term"] == 1 and cert["leader"] == n.id
    assert n.engine.step(Tick()) == []


def test_single_node_restarts_and_leads_again_in_a_new_term() -> None:
    c = Cluster(1)
    c.tick(0)
    c.submit(0, 3)
    c.crash(0)
    c.restart(0)
    assert c.node(0).engine.term == 1 and c.node(0).engine.commit_index == 3
    c.tick(0)
    assert c.node(0).engine.role is Role.LEADER and c.node(0).engine.term == 2
    c.submit(0)
    assert c.node(0).engine.commit_index == 4


# --- election ---------------------------------------------------------------------------------------


def test_election_a_candidate_persists_term_and_self_vote_before_asking() -> None:
    """§5.2 + Figure 2: currentTerm and votedFor are on stable storage before RequestVote leaves."""
    c = Cluster(3)
    c.campaign(0)
    event, actions = c.node(0).steps[-1]
    assert isinstance(event, Received) and kinds(actions) == ["Persist", "Broadcast"]
    assert isinstance(actions[0], Persist)
    assert json.loads(actions[0].puts[STATE_KEY]) == {"term": 1, "vote": c.ids[0]}


def test_election_a_vote_is_persisted_before_it_is_sent() -> None:
    c = Cluster(3)
    c.campaign(0)
    frm, to, data = next(m for m in c.net if m[1] == c.ids[1] and m[2][5] == REQUEST_VOTE)
    actions = c.step(c.node(1), Received(frm, data))
    assert kinds(actions) == ["Persist", "Send"]
    assert isinstance(actions[0], Persist)
    assert json.loads(actions[0].puts[STATE_KEY]) == {"term": 1, "vote": c.ids[0]}


def test_election_one_vote_per_term_survives_a_restart() -> None:
    """Election Safety (§5.2): a restarted voter remembers whom it voted for in its term."""
    c = Cluster(3)
    c.campaign(0)
    frm, to, data = next(m for m in c.net if m[1] == c.ids[2] and m[2][5] == REQUEST_VOTE)
    c.net.clear()
    c.step(c.node(2), Received(frm, data))
    c.net.clear()
    c.crash(2)
    c.restart(2)
    assert c.node(2).engine.term == 1 and c.node(2).engine.status()["voted_for"] == c.ids[0]
    rival = RequestVote(c.ids[1], 1, 0, 0, 0)  # node 1 standing in the same term
    answer = c.step(c.node(2), Received(c.ids[1], encode_request_vote(CHAIN, rival)))
    assert kinds(answer) == ["Send"]
    assert isinstance(answer[0], Send)
    reply = decode_message(answer[0].data, CHAIN, 64, 1 << 20)
    assert reply == VoteResponse(c.ids[2], 1, c.ids[1], False)
    assert c.node(2).engine.status()["voted_for"] == c.ids[0]


def test_pre_vote_a_node_cut_off_from_the_leader_does_not_depose_it() -> None:
    """Dissertation §9.6: node 2 loses the leader but still reaches node 1, which hears the leader
    and so refuses the pre-vote; no term is raised, and after the heal nothing changes."""
    c = Cluster(3)
    c.elect(0)
    c.run(2)
    c.run(40, link(c, (0, 1), (1, 2)))
    assert c.node(2).engine.term == 1 and c.node(2).engine.role is Role.PRE_CANDIDATE
    assert c.node(1).engine.counters["pre_vote_refused"] > 0
    c.run(5)
    assert [(n.engine.term, n.engine.leader) for n in c.nodes] == [(1, c.ids[0])] * 3


def test_election_winner_is_leader_and_others_follow() -> None:
    c = Cluster(5)
    c.elect(3)
    c.run(2)
    assert [n.engine.leader for n in c.nodes] == [c.ids[3]] * 5
    assert {n.engine.term for n in c.nodes} == {1}


def test_election_a_candidate_with_a_stale_log_is_refused() -> None:
    """§5.4.1: a voter denies its vote to a candidate whose log is less up-to-date than its own
    (here already at the pre-vote, so the stale node does not even raise the term)."""
    c = Cluster(3)
    c.elect(0)
    c.crash(2)
    c.submit(0)
    c.deliver()
    c.run(1)
    assert c.node(1).engine.commit_index == 1
    c.crash(0)
    c.restart(2)  # node 2 missed block 1
    c.age(2)
    for _ in range(3 * c.config.election_timeout_max_ticks):
        c.tick(2)
        c.deliver()
    assert c.node(2).engine.role is Role.PRE_CANDIDATE and c.node(1).engine.counters["pre_vote_refused"] >= 1
    assert c.node(1).engine.term == 1
    c.elect(1)
    c.run(3)
    assert c.node(2).engine.commit_index >= 1
    c.assert_agreement()


def test_election_randomized_timeouts_come_from_the_injected_rng() -> None:
    c1, c2 = Cluster(3), Cluster(3)
    for c in (c1, c2):
        for _ in range(30):
            c.tick()
            c.deliver()
    assert [n.engine.status() for n in c1.nodes] == [n.engine.status() for n in c2.nodes]


# --- replication --------------------------------------------------------------------------------------


def test_replication_a_majority_commits_and_every_node_gets_a_valid_certificate() -> None:
    c = Cluster(5)
    c.elect(1)
    c.submit(1, 4)
    c.deliver()
    c.run(2)
    assert [len(n.committed) for n in c.nodes] == [4] * 5
    c.assert_agreement()
    for n in c.nodes:
        for block, certificate in n.committed:
            assert certificate["leader"] == c.ids[1] and certificate["term"] == 1
            assert verify_certificate(block, certificate, c.ids, Ed25519Verifier())


def test_replication_a_follower_persists_entries_before_acknowledging() -> None:
    c = Cluster(3)
    c.elect(0)
    c.net.clear()
    c.submit(0)
    frm, to, data = next(m for m in c.net if m[1] == c.ids[1])
    c.net.clear()
    actions = c.step(c.node(1), Received(frm, data))
    assert kinds(actions) == ["Persist", "Send"]
    assert isinstance(actions[0], Persist) and entry_key(1) in actions[0].puts


def test_replication_commit_needs_a_majority() -> None:
    c = Cluster(5)
    c.elect(0)
    alone = link(c, (0, 1))  # the leader and one follower: 2 of 5
    c.submit(0)
    c.deliver(alone)
    c.run(3, alone)
    assert c.node(0).engine.commit_index == 0 and c.node(1).engine.log.last_index == 1
    c.run(2)
    assert all(n.engine.commit_index == 1 for n in c.nodes)


def test_replication_follower_repair_overwrites_a_divergent_uncommitted_tail() -> None:
    """§5.3: a follower's conflicting entries are deleted and replaced by the leader's."""
    c = Cluster(3)
    c.elect(0)
    c.net.clear()
    c.submit(0)
    c.net.clear()  # the leader's block 1 reaches nobody
    stale = c.node(0).engine.log.entry(1).block
    c.crash(0)
    c.elect(1)
    c.submit(1, 2)
    c.deliver()
    assert c.node(1).engine.commit_index == 2
    c.restart(0)
    assert c.node(0).engine.log.last_index == 1 and c.node(0).engine.log.entry(1).block == stale
    c.run(3)
    assert c.committed_hashes(0) == c.committed_hashes(1) == c.committed_hashes(2)
    assert len(c.committed_hashes(0)) == 2 and stale.hash not in c.committed_hashes(0)


def test_replication_a_restarted_node_keeps_its_log_and_recommits_from_the_leader() -> None:
    c = Cluster(3)
    c.elect(0)
    c.net.clear()
    c.submit(0)
    # Node 2 stores the entry and acknowledges, but the leader's commit never reaches it.
    c.deliver(lambda f, t, d: not (f == c.ids[0] and t == c.ids[2] and c.node(2).engine.log.last_index == 1))
    assert c.node(0).engine.commit_index == 1 and c.node(2).engine.commit_index == 0
    c.crash(2)
    c.restart(2)
    assert c.node(2).engine.log.last_index == 1 and c.node(2).engine.commit_index == 0
    c.run(2)
    assert c.node(2).engine.commit_index == 1
    c.assert_agreement()


def test_replication_new_leader_commits_older_entries_through_a_block_of_its_own_term() -> None:
    """§5.4.2: the new leader needs an entry of its own term; it re-stamps its last entry (the same
    block, its own term) rather than appending a no-op whose app hash it could not know, and
    committing it commits the rest."""
    c = Cluster(3)
    c.elect(0)
    c.net.clear()
    c.submit(0)
    old = c.node(0).engine.log.entry(1).block
    c.deliver(lambda f, t, d: t == c.ids[1])  # node 1 stores block 1; no acknowledgement comes back
    c.crash(0)
    c.elect(1)
    log = c.node(1).engine.log
    assert log.last_index == 1 and log.entry(1).block.hash == old.hash and log.entry(1).term == 2
    c.run(2)
    assert c.committed_hashes(1)[:1] == [old.hash] and c.node(2).engine.commit_index >= 1
    assert c.node(1).engine.counters["restamped_entries"] == 1
    assert "noop_blocks" not in c.node(1).engine.counters


# --- Figure 8 -----------------------------------------------------------------------------------------


class CommitsAnyMajorityEntry(RaftEngine):
    """Broken on purpose, the paper's Figure 8 hazard: a new leader keeps its old-term entry as it is
    (no re-stamp of its own term) and commits whatever a majority stores, ignoring §5.4.2's
    current-term rule."""

    def _may_commit(self, index: int) -> bool:
        return True

    def _restamp_last(self) -> None:
        return None


def votes_only(keep: Keep) -> Keep:
    kinds = (REQUEST_VOTE, VOTE_RESPONSE, PRE_VOTE, PRE_VOTE_RESPONSE)
    return lambda f, t, d: keep(f, t, d) and d[5] in kinds


def figure_8(engine_class: type[RaftEngine]) -> Cluster:
    """The paper's Figure 8, with S1..S5 = nodes 0..4 and the contested entry at height 1.

    (a) S1 leads term 1; its block reaches S2 only. (b) S1 crashes; S5 wins term 2 with S3, S4 and
    itself and appends its own block at height 1, which reaches nobody. (c) S5 crashes; S1 restarts,
    wins term 3 and replicates its block at height 1 to S3 and S4: a correct leader has re-stamped
    it with term 3 first (its own term's entry, in place of the paper's no-op), the broken one sends
    it with its old term 1. (d) S1 crashes; S5 restarts and campaigns with S2, S3, S4: its last term
    2 beats term 1, not term 3.
    """
    c = Cluster(5, limits=RaftLimits(max_append_entries=1), engine_class=engine_class)
    s1, s2, s3, s4, s5 = range(5)
    # (a)
    c.elect(s1)
    c.net.clear()
    c.submit(s1)
    c.deliver(lambda f, t, d: t == c.ids[s2] and f == c.ids[s1])
    c.net.clear()
    c.crash(s1)
    # (b)
    c.elect(s5, among(c, s3, s4, s5))
    c.net.clear()
    c.submit(s5)
    c.net.clear()
    c.crash(s5)
    # (c)
    c.restart(s1)
    c.elect(s1, votes_only(among(c, s1, s2, s3, s4)))
    assert c.node(s1).engine.term == 3
    def entries_only(f: str, t: str, d: bytes) -> bool:  # S1 crashes before anyone hears of a commit
        if d[5] != APPEND_ENTRIES:
            return True
        msg = decode_message(d, CHAIN, 64, 1 << 20)
        return isinstance(msg, AppendEntries) and (bool(msg.entries) or not msg.certs)

    c.net.clear()
    c.tick(s1)
    c.deliver(lambda f, t, d: among(c, s1, s2, s3, s4)(f, t, d) and entries_only(f, t, d))
    assert [c.node(i).engine.log.last_index for i in range(4)] == [1, 1, 1, 1]
    c.net.clear()
    c.crash(s1)
    # (d)
    c.restart(s5)
    try:
        c.elect(s5, among(c, s2, s3, s4, s5))
    except AssertionError:
        pass  # it cannot win: S3 and S4 hold a term-3 entry
    c.run(3, among(c, s2, s3, s4, s5))
    return c


def test_figure_8_a_new_leader_restamps_its_old_term_entry_so_a_majority_copy_is_safe() -> None:
    c = figure_8(RaftEngine)
    s1_block = c.node(0).engine.log.entry(1).block
    assert c.node(0).engine.log.entry(1).term == 3  # re-stamped with S1's own term
    assert c.node(4).engine.role is not Role.LEADER  # S5 cannot win over S3's and S4's term 3
    c.restart(0)
    c.run(4)
    c.assert_agreement()
    assert all(c.committed_hashes(i)[0] == s1_block.hash for i in range(5))


def test_figure_8_broken_variant_loses_a_committed_block() -> None:
    c = figure_8(CommitsAnyMajorityEntry)
    assert len(c.node(0).committed) == 1  # S1 committed its old-term block by counting replicas ...
    with pytest.raises(AssertionError, match="conflict at 1"):
        c.assert_agreement()  # ... and S5, rightly elected, committed another block at height 1


# --- lagging followers and block sync -----------------------------------------------------------------


def test_a_follower_behind_the_leaders_log_is_told_to_sync_and_rejoins_after_chain_advanced() -> None:
    c = Cluster(3, limits=RaftLimits(retained_entries=1))
    c.elect(0)
    c.crash(2)
    c.submit(0, 5)
    c.deliver()
    c.run(1)
    assert c.node(0).engine.commit_index == 5 and c.node(0).engine.log.base.index >= 3
    c.restart(2)
    c.run(2)
    lagging = c.node(2)
    assert lagging.engine.status()["needs_sync"] == 5 and lagging.engine.counters["sync_hints"] >= 1
    # Block sync (another component) stores heights 1..5 with the leader's certificates.
    lagging.committed = list(c.node(0).committed)
    c.step(lagging, ChainAdvanced(lagging.tip))
    assert lagging.engine.status()["needs_sync"] is None and lagging.engine.commit_index == 5
    c.run(2)
    c.submit(0)
    c.deliver()
    c.run(1)
    assert lagging.engine.commit_index == 6
    c.assert_agreement()


def test_a_node_whose_log_base_came_from_block_sync_can_vote_and_be_elected() -> None:
    """The vote rule's second clause: a candidate whose committed height covers the voter's log."""
    c = Cluster(3, limits=RaftLimits(retained_entries=0))
    c.elect(0)
    c.crash(2)
    c.submit(0, 2)
    c.deliver()
    c.run(1)
    c.restart(2)
    c.node(2).committed = list(c.node(0).committed)
    c.step(c.node(2), ChainAdvanced(c.node(2).tip))
    assert c.node(2).engine.log.base.term is None
    c.crash(0)
    c.elect(2)  # node 1 grants: node 2's committed height 2 covers node 1's whole log
    c.submit(2)
    c.run(2)
    assert c.node(1).engine.commit_index == 3
    c.assert_agreement()


def test_chain_advanced_past_a_leaders_log_makes_it_step_down() -> None:
    c = Cluster(3)
    c.elect(0)
    block = make_block(CHAIN, 1, GENESIS.block_hash, GENESIS.timestamp + 1, c.ids[1], (), "ee" * 32)
    c.node(0).committed.append((block, {}))
    c.step(c.node(0), ChainAdvanced(tip_of(block)))
    assert c.node(0).engine.role is Role.FOLLOWER and c.node(0).engine.commit_index == 1


# --- faults at the edges ------------------------------------------------------------------------------


def test_a_partitioned_leader_steps_down_and_the_majority_elects_another() -> None:
    """Check quorum (dissertation §6.2): a leader that hears from no majority stops leading."""
    c = Cluster(5)
    c.elect(0)
    majority = among(c, 1, 2, 3, 4)
    for _ in range(c.config.election_timeout_max_ticks + 1):
        c.tick(0)
        c.deliver(majority)
    assert c.node(0).engine.role is not Role.LEADER and c.node(0).engine.counters["leader_lost_quorum"] == 1
    c.run(30, majority)
    leaders = [n for n in c.nodes[1:] if n.engine.role is Role.LEADER]
    assert len(leaders) == 1
    c.run(40)  # healed: node 0 may force one more election with its inflated term, then all settle
    leaders = [n for n in c.nodes if n.engine.role is Role.LEADER]
    assert len(leaders) == 1 and all(n.engine.leader == leaders[0].id for n in c.nodes)


def test_a_stale_leader_learns_the_higher_term_and_follows() -> None:
    c = Cluster(3)
    c.elect(0)
    c.elect(1, among(c, 1, 2))
    assert c.node(0).engine.role is Role.LEADER  # still thinks so: it has heard nothing yet
    c.tick(0)
    c.deliver()
    assert c.node(0).engine.role is Role.FOLLOWER and c.node(0).engine.term == 2


def heartbeats(c: Cluster, i: int) -> list[tuple[str, str, bytes]]:
    c.net.clear()
    for _ in range(c.config.heartbeat_ticks):
        c.tick(i)
    out, c.net = c.net, []
    return out


def test_garbage_and_strangers_are_counted_and_dropped() -> None:
    c = Cluster(3)
    c.elect(0)
    e = c.node(1).engine
    heartbeat = next(d for f, t, d in heartbeats(c, 0) if t == c.ids[1])
    stranger = node_key(99).address
    assert e.step(Received(stranger, heartbeat)) == []
    assert e.step(Received(c.ids[1], heartbeat)) == []
    assert e.step(Received(c.ids[0], b"")) == []
    assert e.step(Received(c.ids[0], b"\xff" * 300)) == []
    assert e.step(Received(c.ids[0], heartbeat + b"x")) == []
    assert e.step(Received(c.ids[0], heartbeat.replace(CHAIN.encode(), b"raft-tesX", 1))) == []
    assert e.counters == {"not_validator": 1, "from_self": 1, "malformed": 3, "wrong_chain_id": 1}


def test_a_heartbeat_carries_the_commit_and_its_certificates() -> None:
    c = Cluster(3)
    c.elect(0)
    c.net.clear()
    c.submit(0)
    c.deliver(lambda f, t, d: t != c.ids[2] or c.node(2).engine.log.last_index == 0)
    beats = [d for f, t, d in heartbeats(c, 0) if t == c.ids[2]]
    msg = decode_message(beats[0], CHAIN, 64, 1 << 20)
    assert isinstance(msg, AppendEntries) and msg.commit == 1 and [s.index for s in msg.certs] == [1]


def test_a_sync_hint_names_the_leaders_committed_height() -> None:
    c = Cluster(3, limits=RaftLimits(retained_entries=0))
    c.elect(0)
    c.crash(2)
    c.submit(0, 3)
    c.deliver()
    c.run(1)
    c.restart(2)
    c.run(1)  # the first heartbeat is rejected: node 2 has nothing the leader still holds
    beats = [d for f, t, d in heartbeats(c, 0) if t == c.ids[2]]
    msg = decode_message(beats[0], CHAIN, 64, 1 << 20)
    assert isinstance(msg, SyncHint) and msg.height == 3 and msg.block_hash == c.committed_hashes(0)[2]


def test_the_persisted_log_stays_bounded() -> None:
    c = Cluster(3, limits=RaftLimits(retained_entries=2))
    c.elect(0)
    c.submit(0, 11)
    c.deliver()
    c.run(1)
    assert all(n.engine.commit_index == 11 for n in c.nodes)
    for n in c.nodes:
        log_keys = [k for k in n.records if k.startswith("raft/log/")]
        assert 1 <= len(log_keys) <= 4, log_keys
    c.crash(1)
    c.restart(1)
    assert c.node(1).engine.commit_index == 11 and c.node(1).engine.log.last_index == 11


def test_a_message_whose_sender_field_is_not_the_authenticated_peer_is_dropped() -> None:
    c = Cluster(3)
    c.elect(0)
    heartbeat = next(d for f, t, d in heartbeats(c, 0) if t == c.ids[1])
    assert c.node(1).engine.step(Received(c.ids[2], heartbeat)) == []
    assert c.node(1).engine.counters == {"sender_mismatch": 1}


def test_chain_advanced_onto_a_block_already_in_the_log_keeps_the_log() -> None:
    """Block sync can store blocks the follower already holds before it learns they are committed."""
    c = Cluster(3)
    c.elect(0)
    c.net.clear()
    c.submit(0, 2)

    def no_commit_news_for_2(f: str, t: str, d: bytes) -> bool:
        if t != c.ids[2] or d[5] != APPEND_ENTRIES:
            return True
        msg = decode_message(d, CHAIN, 64, 1 << 20)
        return isinstance(msg, AppendEntries) and msg.commit == 0

    c.deliver(no_commit_news_for_2)  # node 2 stores block 1 but never learns that it is committed
    follower = c.node(2)
    assert (follower.engine.log.last_index, follower.engine.commit_index) == (1, 0)
    follower.committed = list(c.node(0).committed)[:1]
    before = follower.engine.log.last_index
    actions = c.step(follower, ChainAdvanced(follower.tip))
    assert not any(isinstance(a, Commit) for a in actions)
    assert follower.engine.commit_index == 1 and follower.engine.log.last_index == before
    assert follower.engine.log.base.index == 0  # nothing dropped: the term of each entry is still known
    c.run(2)
    assert follower.engine.commit_index == 2
    c.assert_agreement()


def test_status_names_role_term_leader_and_heights() -> None:
    c = Cluster(3)
    c.elect(1)
    c.submit(1)
    c.run(2)
    status = c.node(0).engine.status()
    assert status == {"engine": "raft", "role": "follower", "term": 1, "leader": c.ids[1],
                      "voted_for": c.ids[1], "commit_height": 1, "last_index": 1, "log_base": 0,
                      "needs_sync": None, "is_validator": True, "validators": 3, "max_faulty": 1, "quorum": 2}
    assert json.loads(json.dumps(status)) == status


def test_election_timeouts_back_off_while_no_leader_is_heard_and_reset_when_one_is() -> None:
    c = Cluster(3)
    low, high = c.config.election_timeout_min_ticks, c.config.election_timeout_max_ticks

    def gaps_between_elections(count: int) -> list[int]:
        """Ticks between node 2's successive pre-votes, all of them lost."""
        starts: list[int] = []
        tick = 0
        while len(starts) < count:
            tick += 1
            actions = c.step(c.node(2), Tick())
            c.net.clear()
            if any(isinstance(a, Broadcast) and a.data[5] == PRE_VOTE for a in actions):
                starts.append(tick)
        return [b - a for a, b in zip([0, *starts], starts, strict=False)]

    # The first timeout is a follower's; each election that comes to nothing doubles the next.
    for gap, factor in zip(gaps_between_elections(6), (1, 1, 2, 4, 8, 8), strict=True):
        assert low * factor <= gap < high * factor, (gap, factor)
    c.elect(0, among(c, 0, 1))
    c.tick(0)
    c.deliver()  # node 2 hears the leader
    assert c.node(2).engine.leader == c.ids[0]
    assert low <= gaps_between_elections(1)[0] < high
