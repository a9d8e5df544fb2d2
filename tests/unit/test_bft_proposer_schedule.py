"""The BFT round-0 proposer schedule: a validator the committed chain shows absent is skipped at its
turn and retried with a doubling backoff, and every node computes the same schedule from the chain."""

from __future__ import annotations

import dataclasses
import random

import pytest

from consensus.api import ChainAdvanced, ChainTip, EngineContext, Received, Tick, TxsAvailable
from consensus.bft import BftEngine
from consensus.bft.messages import Kind, encode, sign
from consensus.bft.rounds import ProposerSchedule, proposer_index
from ledger.block import Block
from tests.unit.test_bft_engine import (
    CHAIN,
    CONFIG,
    GENESIS,
    Checker,
    HmacSigner,
    HmacVerifier,
    Net,
    broadcasts,
    child,
    node_ids,
    tip_of,
)

N = 4
SMALL = ProposerSchedule(window_turns=8, first_retry_turns=2, max_retry_turns=8)


class ScheduledNet(Net):
    """`Net` whose engines use `schedule`."""

    schedule = ProposerSchedule()

    def make(self, i: int) -> BftEngine:
        chain = self.chains[i]
        tip = tip_of(chain[-1][0]) if chain else GENESIS
        ctx = EngineContext(CHAIN, self.ids, HmacSigner(self.ids[i]), self.verifier, self.checkers[i], tip,
                            random.Random(i), dict(self.disks[i]), CONFIG,
                            recent_proposers=[b.header.proposer for b, _ in chain])
        return BftEngine(ctx, schedule=self.schedule)


class SmallNet(ScheduledNet):
    """Short backoffs, so that a test sees many retries."""

    schedule = SMALL


def engine_on(ids: list[str], parent: ChainTip, proposers: list[str], me: int = 3) -> BftEngine:
    ctx = EngineContext(CHAIN, ids, HmacSigner(ids[me]), Net(1).verifier, Checker(), parent, random.Random(0), {},
                        CONFIG, recent_proposers=proposers)
    return BftEngine(ctx, schedule=SMALL)


def run_heights(net: Net, count: int, live: list[int]) -> None:
    """Commit `count` more blocks on the `live` validators, ticking through round changes."""
    for _ in range(count):
        target = min(net.heights()[i] for i in live) + 1
        net.txs_to_all()
        for _ in range(400):
            if min(net.heights()[i] for i in live) >= target:
                break
            net.tick()
        assert min(net.heights()[i] for i in live) >= target, "no progress"


def history(proposers: dict[int, int], upto: int) -> list[int]:
    """Proposer indices of heights 1..upto: `proposers[h]` where given, else the turn's owner."""
    return [proposers.get(h, h % N) for h in range(1, upto + 1)]


# --- the rule, as a pure function of the committed headers ----------------------------------------


def test_everyone_present_means_the_plain_rotation() -> None:
    rule = ProposerSchedule()
    for height in range(1, 40):
        assert rule.round0_proposer(height, N, history({}, height - 1)) == proposer_index(height, 0, N)


def test_a_validator_that_missed_its_turn_is_skipped_and_the_next_present_one_proposes() -> None:
    rule = ProposerSchedule()
    # Validator 0 had its turn at height 4 and did not propose: validator 1 did, in round 1.
    chain = history({4: 1}, 7)
    assert rule.round0_proposer(8, N, chain) == 1, "0 missed one turn: skipped, 1 stands in"
    assert rule.round0_proposer(5, N, chain[:4]) == 1, "others keep their turns"
    # Validators 0 and 1 both missed their last turns: 2 stands in for 0.
    assert rule.round0_proposer(8, N, history({4: 2, 5: 2}, 7)) == 2


def test_an_absent_validator_is_retried_after_a_backoff_that_doubles_up_to_the_cap() -> None:
    """A validator that never proposes again: the turns at which it is still scheduled."""
    rule = ProposerSchedule(window_turns=1000, max_window_blocks=100_000, first_retry_turns=4, max_retry_turns=16)
    chain: list[int] = []
    scheduled_at_missed: list[int] = []
    missed = 0
    for height in range(1, 4 * 80):
        chosen = rule.round0_proposer(height, N, chain)
        if height % N == 0:
            if chosen == 0:
                scheduled_at_missed.append(missed)
            missed += 1
        chain.append(1 if chosen == 0 else chosen)  # it never proposes: round 1's proposer does
    assert scheduled_at_missed == [0, 4, 8, 16, 32, 48, 64], scheduled_at_missed


def test_a_retried_validator_that_proposes_is_back_in_the_rotation() -> None:
    rule = ProposerSchedule(first_retry_turns=4, max_retry_turns=16)
    chain = history({h: 1 for h in range(4, 4 * 5, 4)}, 4 * 5 - 1)  # missed its turns 1..4
    assert rule.round0_proposer(20, N, chain) == 0, "4 missed turns: a retry"
    chain.append(0)  # and it proposed
    assert [rule.round0_proposer(h, N, chain + history({}, h - 1)[len(chain):]) for h in (24, 28)] == [0, 0]


def test_beyond_the_window_an_absent_validator_is_retried_every_max_retry_turns() -> None:
    rule = ProposerSchedule(window_turns=4, first_retry_turns=2, max_retry_turns=4)
    window = rule.window_blocks(N)
    scheduled = []
    for height in range(200, 400, N):  # validator 0's turns, far from genesis
        chain = [1] * (height - 1)  # validator 0 has not proposed for longer than the window
        assert len(chain[-window:]) == window
        if rule.round0_proposer(height, N, chain) == 0:
            scheduled.append(height // N)
    assert scheduled and all(turn % 4 == 0 for turn in scheduled)
    assert len(scheduled) == len([t for t in range(200 // N, 400 // N) if t % 4 == 0])


def test_only_the_window_counts() -> None:
    rule = SMALL
    window = rule.window_blocks(N)
    chain = [random.Random(7).randrange(N) for _ in range(500)]
    for height in range(len(chain) - 50, len(chain) + 1):
        older = [9] * 30 + chain[:height - 1]  # whatever lies before the window makes no difference
        assert rule.round0_proposer(height, N, chain[:height - 1]) == \
            rule.round0_proposer(height, N, older[-window:]) == rule.round0_proposer(height, N, older)


def test_schedule_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ProposerSchedule(first_retry_turns=3)
    with pytest.raises(ValueError, match="exceed"):
        ProposerSchedule(first_retry_turns=32, max_retry_turns=16)


# --- the engine -----------------------------------------------------------------------------------


def round_changes(blocks: list[tuple[Block, dict[str, object]]]) -> int:
    return sum(1 for _, cert in blocks if cert["round"] != 0)


def test_one_crashed_validator_of_four_costs_a_round_change_only_on_its_retries() -> None:
    """The defect: with plain rotation every fourth height waited out a round timeout."""
    net = ScheduledNet(N)
    dead = 0
    net.drop = lambda src, dst, msg: dead in (src, dst)
    live = [1, 2, 3]
    run_heights(net, 200, live)  # 50 turns of the dead validator: scheduled at 0, 16 and 32 missed
    chain = net.chains[1]
    assert len(chain) >= 200
    assert round_changes(chain) == 3, [b.height for b, c in chain if c["round"] != 0]
    assert {b.header.proposer for b, _ in chain} == {net.ids[i] for i in live}


def test_a_validator_that_comes_back_proposes_again_after_its_retry() -> None:
    net = SmallNet(N)
    dead = 0
    net.drop = lambda src, dst, msg: dead in (src, dst)
    run_heights(net, 60, [1, 2, 3])
    assert all(b.header.proposer != net.ids[dead] for b, _ in net.chains[1])
    back_at = len(net.chains[1])
    net.drop = lambda src, dst, msg: False
    net.queue.clear()
    net.chains[dead] = list(net.chains[1])  # it synced the chain it missed ...
    net.disks[dead] = {}
    net.engines[dead] = net.make(dead)  # ... and restarted on it
    run_heights(net, 4 * (SMALL.max_retry_turns + 2), [0, 1, 2, 3])
    later = [b for b, _ in net.chains[1][back_at:]]
    assert any(b.header.proposer == net.ids[dead] for b in later)
    assert len({tuple(b.hash for b, _ in c) for c in net.chains}) == 1
    # Once back, it keeps its turns.
    first = min(b.height for b in later if b.header.proposer == net.ids[dead])
    turns_after = [b for b in later if b.height > first and b.height % N == dead]
    assert turns_after and all(b.header.proposer == net.ids[dead] for b in turns_after)


def test_engines_fed_the_same_chain_compute_the_same_proposer_for_every_height_and_round() -> None:
    """Live, restarted from the store, and block-synced engines agree on every (height, round)."""
    net = SmallNet(N)
    dead = 0
    net.drop = lambda src, dst, msg: dead in (src, dst)
    run_heights(net, 80, [1, 2, 3])
    chain = net.chains[1]
    ids = net.ids
    skipped = 0
    follower = engine_on(ids, GENESIS, [], me=2)  # follows the chain by block sync only, one block at a time
    for height in range(1, len(chain) + 1):
        parent: ChainTip = tip_of(chain[height - 2][0]) if height > 1 else GENESIS
        proposers = [b.header.proposer for b, _ in chain[:height - 1]]
        restarted = engine_on(ids, parent, proposers)
        assert follower.status()["height"] == restarted.status()["height"] == height
        for r in range(6):
            assert follower.proposer_of(r) == restarted.proposer_of(r)
        block, cert = chain[height - 1]
        if cert["round"] == 0:
            assert block.header.proposer == restarted.proposer_of(0), "what the live engines used"
        skipped += restarted.proposer_of(0) != ids[proposer_index(height, 0, N)]
        for r in range(1, 6):
            assert restarted.proposer_of(r) == ids[proposer_index(height, r, N)], "rounds > 0 rotate"
        follower.step(ChainAdvanced(tip_of(block), (block.header.proposer,)))
    assert skipped >= 10, "the schedule did skip the dead validator"
    assert follower.counters.get("proposer_history_gaps", 0) == 0


def test_a_sync_with_a_hole_in_the_history_is_counted_and_falls_back_to_what_is_known() -> None:
    net = ScheduledNet(N)
    engine = net.engines[0]
    far = ChainTip(50, "ab" * 32, 5_000, "cd" * 32)
    engine.step(ChainAdvanced(far))
    assert engine.counters["proposer_history_gaps"] == 1
    assert engine.proposer_of(0) == net.ids[proposer_index(51, 0, N)], "no history: the plain rotation"


def test_round_0_of_a_retried_proposer_times_out_sooner_unless_its_proposal_arrives() -> None:
    """A retry costs `retry_round_timeout_ticks`, not a full round timeout; a proposer that is back
    gets the full timeout once its valid proposal is in."""
    config = dataclasses.replace(CONFIG, round_timeout_ticks=12, max_round_timeout_ticks=96,
                                 retry_round_timeout_ticks=3)
    ids = node_ids(4)
    missed_16 = history({t: 1 for t in range(4, 68, 4)}, 67)  # validator 0 missed 16 turns
    parent = ChainTip(67, "ab" * 32, 9_000, "cd" * 32)

    def engine(proposers: list[int]) -> BftEngine:
        ctx = EngineContext(CHAIN, ids, HmacSigner(ids[3]), HmacVerifier(), Checker(), parent, random.Random(0),
                            {}, config, recent_proposers=[ids[p] for p in proposers])
        return BftEngine(ctx)

    def ticks_to_round_change(e: BftEngine) -> int:
        e.step(TxsAvailable())
        for tick in range(1, 100):
            if any(m.kind == Kind.ROUND_CHANGE for m in broadcasts(e.step(Tick()))):
                return tick
        raise AssertionError("no round change")

    retried = engine(missed_16)
    assert retried.proposer_of(0) == ids[0] and retried.status()["round_timer_ticks"] is None
    assert ticks_to_round_change(retried) == 3
    assert ticks_to_round_change(engine(history({}, 67))) == 12, "a proposer that is present: the full timeout"
    # The retried proposer is back: its proposal restarts the timer with the full timeout.
    back = engine(missed_16)
    back.step(TxsAvailable())
    block = child(parent, ids[0])
    proposal = encode(sign(HmacSigner(ids[0]), CHAIN, Kind.PROPOSAL, 68, 0, 0, block.hash,
                           block_bytes=block.encode()))
    assert any(m.kind == Kind.PREPARE for m in broadcasts(back.step(Received(ids[0], proposal))))
    for _ in range(11):
        assert not any(m.kind == Kind.ROUND_CHANGE for m in broadcasts(back.step(Tick())))
