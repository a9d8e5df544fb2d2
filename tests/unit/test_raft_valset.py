"""Raft across validator-set changes: the entry of height h commits on a majority of the set of h
(`EngineContext.validators_at`), elections count the set of the candidate's election height, a node
outside the set is a learner that never campaigns and votes once its height's set holds it, a
removed leader steps down, and no log runs above the height whose set its node knows (stored
commit + ACTIVATION_DELAY). The schedules here are fixed by height, as a decided change is.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest

from consensus.api import (
    BuildProposal,
    ChainAdvanced,
    Ed25519Signer,
    Ed25519Verifier,
    EngineContext,
    Received,
    Send,
)
from consensus.raft import RaftEngine, Role, verify_certificate
from consensus.raft.messages import (
    APPEND_ENTRIES,
    PRE_VOTE,
    REQUEST_VOTE,
    RequestVote,
    VoteResponse,
    decode_message,
    encode_request_vote,
)
from ledger.valset import ACTIVATION_DELAY
from tests.unit.test_raft_engine import CHAIN, AcceptAll, Cluster, Node

Schedule = Callable[[int], Sequence[int]]  # height -> indexes of the validators in force


class ChangingCluster(Cluster):
    """`Cluster` whose engines read the set of each height from `schedule`, and refuse (by failing
    the test) to ask for a height their node's committed chain does not fix yet."""

    def __init__(self, n: int, schedule: Schedule, broken: frozenset[int] = frozenset()) -> None:
        self.schedule = schedule
        self.broken = broken  # these nodes run `OldQuorumEngine`
        super().__init__(n)

    def set_at(self, height: int) -> list[str]:
        return [self.ids[i] for i in self.schedule(height)]

    def make_engine(self, node: Node) -> RaftEngine:
        def at(height: int) -> list[str]:
            assert height <= node.tip.height + ACTIVATION_DELAY, \
                f"asked for the set of {height} at tip {node.tip.height}"
            return self.set_at(height)

        ctx = EngineContext(CHAIN, self.set_at(0), Ed25519Signer(node.key), Ed25519Verifier(), AcceptAll(),
                            node.tip, random.Random(node.seed), dict(node.records), self.config,
                            validators_at=at)
        node.seed += 1000
        broken = self.keys.index(node.key) in self.broken
        return (OldQuorumEngine if broken else RaftEngine)(ctx, self.limits)

    def sync(self, i: int) -> None:
        """Block sync, as the node runs it: take the committed blocks the most advanced node has."""
        node = self.nodes[i]
        best = max((n for n in self.nodes), key=lambda n: len(n.committed))
        if node.up and len(best.committed) > len(node.committed):
            assert [b.hash for b, _ in node.committed] == [b.hash for b, _ in best.committed[:len(node.committed)]]
            node.committed = list(best.committed)
            self.step(node, ChainAdvanced(node.tip))

    def height(self) -> int:
        return max(len(n.committed) for n in self.nodes)

    def leaders(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.up and n.engine.role is Role.LEADER]

    def assert_certified_by_their_sets(self) -> None:
        """Every committed block carries a certificate by a validator of its height's set, and no
        two nodes committed different blocks at one height."""
        self.assert_agreement()
        for node in self.nodes:
            for block, cert in node.committed:
                assert verify_certificate(block, cert, self.set_at(block.height), Ed25519Verifier()), \
                    f"block {block.height} certified by {cert['leader'][:8]}, not in its set"
                assert block.header.proposer in self.set_at(block.height)

    def assert_stored_on_majorities(self) -> None:
        """Every committed block is held (committed, or in the log) by a majority of its height's
        set: what makes it survive any later election."""
        for node in self.nodes:
            for block, _ in node.committed:
                holders = [v for v in self.set_at(block.height)
                           if self.holds(self.by_id(v), block.height, block.hash)]
                assert 2 * len(holders) > len(self.set_at(block.height)), \
                    f"block {block.height} is stored on {len(holders)} of its {len(self.set_at(block.height))}"

    @staticmethod
    def holds(node: Node, height: int, block_hash: str) -> bool:
        if len(node.committed) >= height and node.committed[height - 1][0].hash == block_hash:
            return True
        log = node.engine.log
        return log.first_index <= height <= log.last_index and log.hash_at(height) == block_hash

    def work(self, rounds: int, keep: Callable[[str, str, bytes], bool] = lambda f, t, d: True) -> None:
        for _ in range(rounds):
            for i, node in enumerate(self.nodes):
                if node.up and node.mempool == 0:
                    self.submit(i)
            self.run(1, keep)


def proposed_heights(node: Node) -> list[int]:
    return [a.height for _, actions in node.steps for a in actions if isinstance(a, BuildProposal)]


class OldQuorumEngine(RaftEngine):
    """Deliberately broken: counts commits in the genesis set for ever (keeps the old quorum)."""

    def _counted_set(self, height: int) -> tuple[str, ...]:
        return self._set_at(0)


def test_an_added_validator_learns_first_then_counts_from_its_height() -> None:
    c = ChangingCluster(4, lambda h: [0, 1, 2] if h < 5 else [0, 1, 2, 3])
    learner = c.node(3)
    c.elect(0)
    c.work(2)
    assert learner.engine.status()["is_validator"] is False and learner.engine.role is Role.FOLLOWER
    c.work(12)
    assert c.height() >= 10
    c.assert_certified_by_their_sets()
    # It never campaigned, it follows the chain, and it is a voter now.
    assert learner.engine.counters.get("elections_started", 0) == 0
    assert len(learner.committed) >= 8 and learner.engine.status()["is_validator"] is True
    assert learner.engine.status()["quorum"] == 3
    # From height 5 a majority of four is three: two of the old three no longer commit alone ...
    c.crash(2)
    c.crash(3)
    stuck = c.height()
    c.work(10)
    assert c.height() == stuck
    # ... and the newcomer's copy is what counts with them.
    c.restart(3)
    c.sync(3)
    c.work(20)
    assert c.height() > stuck
    c.assert_certified_by_their_sets()


def test_a_removed_leader_stops_proposing_and_the_rest_elect_one_of_theirs() -> None:
    removed_from = 6
    c = ChangingCluster(4, lambda h: [0, 1, 2, 3] if h < removed_from else [1, 2, 3])
    c.elect(0)
    c.work(30)
    old = c.node(0)
    assert max(proposed_heights(old)) < removed_from
    assert old.engine.counters["left_validator_set"] == 1
    assert old.engine.role is Role.FOLLOWER and old.engine.counters["elections_started"] == 1
    assert c.height() >= removed_from + 5
    leaders = c.leaders()
    assert len(leaders) == 1 and leaders[0] != 0
    c.assert_certified_by_their_sets()
    # The removed node's messages no longer count with the others.
    assert any(c.node(i).engine.counters.get("not_validator", 0) > 0 for i in (1, 2, 3))


def test_the_hand_over_after_a_removed_leader_is_quick() -> None:
    """The remaining validators see their leader leave the set at the same height and elect one of
    theirs at once, in their order in the set, rather than after an election timeout (ticks, so
    deterministic)."""
    c = ChangingCluster(4, lambda h: [0, 1, 2, 3] if h < 4 else [1, 2, 3])
    c.elect(0)
    ticks = 0
    while c.node(0).engine.counters.get("left_validator_set", 0) == 0:
        c.work(1)
        ticks += 1
        assert ticks < 50
    ticks = 0
    while not c.leaders():
        c.work(1)
        ticks += 1
    assert ticks < c.config.election_timeout_min_ticks
    assert all(c.node(i).engine.counters["leader_left_set"] == 1 for i in (1, 2, 3))


@pytest.mark.parametrize("grow", [(1, 2), (2, 3)])
def test_growing_from_one_to_two_and_two_to_three(grow: tuple[int, int]) -> None:
    old, new = grow
    c = ChangingCluster(3, lambda h: list(range(old)) if h < 4 else list(range(new)))
    for i in range(old, 3):
        assert c.node(i).engine.status()["is_validator"] is False
    c.elect(0)
    c.work(20)
    assert c.height() >= 10
    c.assert_certified_by_their_sets()
    joined = c.node(new - 1)
    assert len(joined.committed) >= 8 and joined.engine.status()["is_validator"] is True
    assert joined.engine.counters.get("elections_started", 0) == 0 or new > 2
    # The old set alone no longer commits: the newcomer counts.
    c.crash(new - 1)
    stuck = c.height()
    c.work(10)
    if new == 2:
        assert c.height() == stuck  # a majority of two is both
    else:
        assert c.height() > stuck  # two of three go on
    c.assert_certified_by_their_sets()


def test_a_new_leader_restamps_its_uncommitted_last_entry_and_builds_no_block() -> None:
    """A new leader with an uncommitted entry re-stamps it with its own term (the same block) rather
    than appending a no-op above it: the app hash of a block above would need the state after the
    uncommitted one, and a height may change state by itself (a change coming into force). After a
    crash and a new election the block is committed unchanged."""
    c = ChangingCluster(3, lambda h: [0, 1, 2])
    c.elect(0)
    c.work(3)
    base = len(c.node(1).committed)
    # Leader 0 replicates block base+1 to node 1 only and never hears back.
    c.submit(0)
    c.deliver(lambda f, t, d: f == c.ids[0] and t == c.ids[1] and d[5] == APPEND_ENTRIES)
    c.net.clear()
    c.crash(0)
    node1 = c.node(1)
    block = node1.engine.log.entry(base + 1).block
    # Node 1 wins (node 2's log is shorter), re-stamps block base+1, and reaches no one.
    c.elect(1, keep=lambda f, t, d: d[5] != APPEND_ENTRIES)
    c.net.clear()
    assert node1.engine.counters["restamped_entries"] == 1 and "noop_blocks" not in node1.engine.counters
    entry = node1.engine.log.entry(base + 1)
    assert node1.engine.log.last_index == base + 1 and entry.block.hash == block.hash
    assert entry.term == node1.engine.term and node1.engine.commit_index == base
    c.crash(1)
    c.restart(1)
    c.elect(1)
    c.run(5)
    assert len(node1.committed) >= base + 1 and node1.committed[base][0].hash == block.hash
    c.restart(0)
    c.work(10)
    c.assert_certified_by_their_sets()


def partition_after_growth(broken: frozenset[int] = frozenset()) -> ChangingCluster:
    """Three validators grow to five (adds in force at 4 and 6); then {0, 1} (with the leader) is
    cut off from {2, 3, 4}, which is a majority of five but not of the old three."""
    c = ChangingCluster(5, lambda h: [0, 1, 2] if h < 4 else [0, 1, 2, 3] if h < 6 else [0, 1, 2, 3, 4],
                        broken=broken)
    c.elect(0)
    c.work(14)
    assert c.height() >= 8
    side = {c.ids[0], c.ids[1]}
    c.work(30, keep=lambda f, t, d: (f in side) == (t in side))
    return c


def test_a_partition_after_growth_commits_on_the_new_majority_only() -> None:
    c = partition_after_growth()
    c.assert_certified_by_their_sets()
    c.assert_stored_on_majorities()
    assert len(c.node(2).committed) > len(c.node(0).committed)


def test_an_engine_that_keeps_the_old_quorum_fails_the_checks() -> None:
    """The broken variant commits on {0, 1}, a majority of the genesis three but two of five: the
    majority check catches it; and with {2, 3, 4} (correct engines) committing other blocks at the
    same heights, so does the agreement check."""
    everywhere = partition_after_growth(frozenset(range(5)))
    with pytest.raises(AssertionError, match="is stored on 2 of its 5"):
        everywhere.assert_stored_on_majorities()
    forked = partition_after_growth(frozenset({0, 1}))
    with pytest.raises(AssertionError, match="conflict at"):
        forked.assert_certified_by_their_sets()


SCHEDULES: tuple[Schedule, ...] = (
    lambda h: [0, 1, 2] if h < 5 else [0, 1, 2, 3],            # add
    lambda h: [0, 1, 2, 3] if h < 5 else [0, 2, 3],            # remove one
    lambda h: [0] if h < 4 else [0, 1] if h < 7 else [0, 1, 2],  # 1 -> 2 -> 3
    lambda h: [0, 1] if h < 4 else [0, 1, 2],                  # 2 -> 3
    lambda h: [0, 1, 2] if h < 4 else [0, 1, 2, 3] if h < 7 else [1, 2, 3],  # add, then remove 0
    lambda h: [0, 1, 2] if h < 4 else [0, 1] if h < 7 else [1],  # 3 -> 2 -> 1
)


@pytest.mark.parametrize("seed", range(36))
def test_seeded_changes_with_loss_and_crashes_stay_safe_and_live(seed: int) -> None:
    rng = random.Random(seed)
    schedule = SCHEDULES[seed % len(SCHEDULES)]
    c = ChangingCluster(4, schedule)
    loss = rng.choice((0.0, 0.1, 0.25))
    for step in range(120):
        for i, node in enumerate(c.nodes):
            if node.up and node.mempool == 0 and rng.random() < 0.5:
                c.submit(i)
        c.tick()
        c.deliver(lambda f, t, d: rng.random() >= loss)
        roll = rng.random()
        up = [i for i, n in enumerate(c.nodes) if n.up]
        if roll < 0.03 and len(up) > 3:
            c.crash(rng.choice(up))
        elif roll < 0.08 and len(up) < 4:
            c.restart(rng.choice([i for i in range(4) if not c.nodes[i].up]))
        elif roll < 0.12:
            c.sync(rng.randrange(4))
        if step % 20 == 19:
            c.assert_certified_by_their_sets()
            c.assert_stored_on_majorities()
    for i in range(4):
        if not c.nodes[i].up:
            c.restart(i)
    before = c.height()
    for _ in range(4):
        for i in range(4):
            c.sync(i)
        c.work(25)
    c.assert_certified_by_their_sets()
    c.assert_stored_on_majorities()
    assert c.height() > max(before, 8), f"no progress after healing: {[n.engine.status() for n in c.nodes]}"
    assert len(c.leaders()) == 1
    leader = c.leaders()[0]
    assert c.ids[leader] in c.set_at(c.height() + 1)
    # Nodes outside the set never campaigned while outside it: no leader was ever outside its set.
    for block, cert in c.nodes[leader].committed:
        assert cert["leader"] in c.set_at(block.height)


def test_no_vote_in_a_term_whose_leader_this_node_follows() -> None:
    """Node 3 learned term 1 from the leader's appends without being asked for its vote: following
    that leader is its vote in term 1, recorded durably, so a vote request of that same term from
    another node is refused, before and after a restart (docs/validators.md says why it matters
    when sets change)."""
    c = ChangingCluster(4, lambda h: [0, 1, 2, 3])
    c.elect(0, keep=lambda f, t, d: not (t == c.ids[3] and d[5] in (REQUEST_VOTE, PRE_VOTE)))
    c.run(2)
    for restarted in (False, True):
        if restarted:
            c.crash(3)
            c.restart(3)
        follower = c.node(3).engine
        assert (follower.term, follower.status()["voted_for"]) == (1, c.ids[0])
        ask = RequestVote(c.ids[1], 1, follower.log.last_index, follower.log.last_term, follower.commit_index)
        actions = c.step(c.node(3), Received(c.ids[1], encode_request_vote(CHAIN, ask)))
        answers = [decode_message(a.data, CHAIN, 64, 1 << 20) for a in actions if isinstance(a, Send)]
        assert len(answers) == 1 and isinstance(answers[0], VoteResponse) and answers[0].granted is False


def test_a_candidate_whose_stored_height_moves_gives_up_its_election() -> None:
    """Its election counted the set of a height fixed by the stored height it started from."""
    c = ChangingCluster(3, lambda h: [0, 1, 2])
    c.elect(0)
    c.work(3)
    c.submit(0)
    for frm, to, data in [m for m in c.net if m[1] == c.ids[2]]:
        c.net.remove((frm, to, data))
        c.step(c.node(2), Received(frm, data))
    c.deliver(lambda f, t, d: t != c.ids[2])
    candidate = c.node(2)
    assert candidate.engine.log.last_index == len(c.node(0).committed) == len(candidate.committed) + 1
    c.campaign(2)
    c.sync(2)  # block sync: the entry it holds is committed, the log stays
    assert candidate.engine.role is Role.FOLLOWER
    assert candidate.engine.counters["election_abandoned_for_sync"] == 1
    c.net.clear()
    c.work(10)
    c.assert_certified_by_their_sets()

