"""Validator-set changes under the simulator: a committee adds, removes and rotates validators
(real governance transactions through the real mempools) during crashes, partitions, disk faults
and Byzantine validators, and every seed stays clean.

The checkers that matter here: every certificate is judged under the set in force at its height
(read from the honest committed chain), every honest engine works with that set (`valset`), the set
changes exactly where the committee's change says, and the liveness phase needs consensus decisions
by a quorum of the set in force at the end. `./scripts/simulate --valset` runs any other range.
"""

from __future__ import annotations

from collections import Counter

from tests.sim.engines import ENGINES
from tests.sim.runner import LIVENESS_BOUND_MAX_TIMEOUTS, LIVENESS_HEIGHTS, MAX_STEPS_PER_NODE, run_seed, run_seeds
from tests.sim.test_sim_pbft import assert_all_clean
from tests.sim.world import World


def test_pbft_4_validators_200_seeds_with_validator_set_changes() -> None:
    done = assert_all_clean(run_seeds("pbft", 4, range(200), valset=True))
    kinds = Counter(change.split()[0] for r in done for change in r.changes)
    # Not a vacuous pass: each kind of change comes into force, in most seeds.
    assert min(kinds[k] for k in ("add", "remove", "rotate")) >= 10, kinds
    assert sum(1 for r in done if r.changes) > 150, kinds
    assert sum(r.halts for r in done) > 0 and any(r.counters.get("dropped_bad_signature") for r in done)


def test_pbft_7_validators_40_seeds_with_validator_set_changes() -> None:
    done = assert_all_clean(run_seeds("pbft", 7, range(40), valset=True))
    assert sum(len(r.changes) for r in done) >= 40


def test_the_new_members_vote_once_their_change_is_in_force() -> None:
    """The spare (an observer until then) and a rotated node's new key sign commit certificates of
    heights from the change's activation on, and never before it."""
    joined = rotated = 0
    for seed in range(30):
        world = World(ENGINES["pbft"], 4, seed, 400, LIVENESS_HEIGHTS, LIVENESS_BOUND_MAX_TIMEOUTS,
                      MAX_STEPS_PER_NODE * 4, valset=True)
        world.run()
        assert world.changes is not None
        chain = max((n for n in world.nodes if n.honest), key=lambda n: n.height).chain
        spare = world.nodes[4]
        new_ids = {c.new_id for c in world.changes.schedule if c.new_id}
        for block, certificate in chain:
            sealers = {s["validator"] for s in certificate["seals"]}
            assert sealers <= set(world.set_at(block.height))
            joined += spare.id in sealers and block.height > 0
            rotated += bool(sealers & new_ids)
    assert joined > 20 and rotated > 20, (joined, rotated)


def test_raft_adds_and_removes_but_never_rotates_in_one_step() -> None:
    """Raft takes single-server changes only (docs/validators.md): its schedules add the spare and
    remove a validator, and draw no one-step rotation, which the chain would refuse."""
    done = [run_seed("raft", 5, seed, valset=True) for seed in range(20)]
    assert all(r.ok for r in done), [r.violation for r in done if not r.ok]
    kinds = [c.split()[0] for r in done for c in r.changes]
    assert kinds.count("add") >= 10 and kinds.count("remove") >= 5 and "rotate" not in kinds, kinds
    assert all(not r.valset_skipped for r in done)


def test_raft_seeds_where_a_new_member_once_kept_the_old_leaders_lease_for_ever() -> None:
    """Seeds that stalled: two of five validators down for good, the spare added (n=6, a majority is
    four), and the leader gone before the change was in force. The newcomer, a learner until then,
    reset its election timer on every tick, so the lease of the leader it last heard never expired
    and it refused every pre-vote of the height whose set it was in: nobody could be elected. (Seed
    20682: the only node holding the next entry was being removed, and counted its election at the
    height above it, whose set it was not in; its first entry as leader is that entry, re-stamped.)"""
    for seed in (111, 229, 410, 20682):
        result = run_seed("raft", 5, seed, valset=True)
        assert result.ok, (seed, result.violation)
