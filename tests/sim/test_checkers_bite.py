"""The simulator's checkers catch broken engines and broken node parts, within a bounded number of seeds.

A simulator that never fails proves nothing by itself; these engines and node parts each break one
rule, and the simulator must report the very violation that rule prevents (the exact checker: with
that checker removed, each test fails).
"""

from __future__ import annotations

import dataclasses

from consensus.bft.certificate import verify_certificate
from tests.sim.engines import ENGINES
from tests.sim.runner import (
    LIVENESS_BOUND_MAX_TIMEOUTS,
    LIVENESS_HEIGHTS,
    MAX_STEPS_PER_NODE,
    SeedResult,
    run_seed,
    storm,
)
from tests.sim.world import Violation, World

SAFETY = ("agreement", "continuity")


def first_failure(engine: str, seeds: range, harsh: bool = False, valset: bool = False) -> SeedResult:
    for seed in seeds:
        result = run_seed(engine, 4, seed, harsh=harsh, valset=valset)
        if not result.ok:
            return result
    raise AssertionError(f"{engine}: no violation found in seeds {seeds.start}-{seeds.stop - 1}")


def test_committing_on_2f_votes_instead_of_2f_plus_1_is_caught_as_disagreement() -> None:
    """PBFT: quorums of 2f + 1 out of 3f + 1 intersect in an honest validator; 2f do not."""
    found = first_failure("pbft-commit-2f", range(100))
    assert found.kind in SAFETY, found.violation


def test_a_proposer_that_ignores_the_prepared_certificate_is_caught_as_disagreement() -> None:
    """QBFT: a round change must re-propose the highest prepared block, or a decided block is lost."""
    found = first_failure("pbft-ignore-prepared", range(200), harsh=True)
    assert found.kind in SAFETY, found.violation


def test_an_engine_that_forgets_its_hard_state_is_caught_equivocating() -> None:
    """Persist before send: a validator that forgets what it signed signs something else after a crash."""
    found = first_failure("pbft-amnesia", range(60), harsh=True)
    assert found.kind == "equivocation", found.violation


def test_an_engine_that_never_changes_round_is_caught_by_the_liveness_phase() -> None:
    found = first_failure("pbft-no-round-change", range(30), harsh=True)
    assert found.kind == "liveness", found.violation


def test_a_certificate_short_of_a_quorum_is_caught() -> None:
    """The 2f engine judged by the real certificate rule: its first certificate is refused."""
    spec = dataclasses.replace(ENGINES["pbft-commit-2f"], verify_certificate=verify_certificate)
    world = World(spec, 4, 0, 400, LIVENESS_HEIGHTS, LIVENESS_BOUND_MAX_TIMEOUTS, MAX_STEPS_PER_NODE * 4)
    try:
        world.run()
    except Violation as exc:
        assert exc.kind == "certificate", exc
    else:
        raise AssertionError("a certificate with 2f seals passed the checker")


def test_a_store_that_does_not_sync_block_batches_is_caught_losing_an_acknowledged_commit() -> None:
    """The listener heard the commit, then a crash took the block away: the durability checker
    compares the reopened store with what was acknowledged."""
    found = first_failure("pbft-unsynced-blocks", range(30))
    assert found.kind == "durability", found.violation
    found = first_failure("raft-unsynced-blocks", range(30))
    assert found.kind == "durability", found.violation


def test_a_core_that_sends_before_it_persists_is_caught_equivocating() -> None:
    """A vote that left before its hard state was durable is forgotten by a crash in between, and the
    restarted node votes again, differently. Random crashes rarely land between the two, so this
    uses the crash storm (a crash every few ticks, half of them halfway through an action list)."""
    for engine, n in (("pbft-send-before-persist", 4), ("raft-send-before-persist", 5)):
        for seed in range(10):
            violation = storm(ENGINES[engine], n, seed)
            if violation is not None:
                assert violation.kind == "equivocation", violation
                break
        else:
            raise AssertionError(f"{engine}: no violation found in crash-storm seeds 0-9")


def test_a_core_that_goes_on_after_a_failed_write_is_caught() -> None:
    """A failed write or sync must halt the node; one that logs it and carries on is caught at its next
    write or send (seeds draw failed writes, failed syncs and failing reads)."""
    found = first_failure("pbft-ignores-disk-errors", range(40))
    assert found.kind == "halt", found.violation


def test_disk_faults_halt_nodes_without_losing_what_they_acknowledged() -> None:
    """Not a vacuous pass: in the real core's seeds, disk faults fire and the nodes they hit halt."""
    results = [run_seed("pbft", 4, seed) for seed in range(20)]
    assert all(r.ok for r in results), [r.violation for r in results if not r.ok]
    assert sum(r.halts for r in results) >= 2
    assert sum(r.synced_commits for r in results) > 0 and sum(r.consensus_commits for r in results) > 0


def test_an_engine_that_asks_its_checker_before_the_commit_is_stored_is_caught() -> None:
    """The executor judges blocks on the committed head only; asked about the next height before the
    runtime stored the decided block, it refuses, and the engine keeps that verdict for the height."""
    found = first_failure("pbft-checks-ahead", range(10))
    assert found.kind == "checker_parent", found.violation


def test_an_engine_that_never_asks_its_checker_is_caught_committing_a_poisoned_block() -> None:
    """Validity: a Byzantine proposer's block with a wrong app_hash gets through an engine that does not
    execute proposals, and the honest node's core cannot execute the block it committed."""
    found = first_failure("pbft-no-checker", range(20))
    assert found.kind == "validity", found.violation


def test_a_crashed_proposer_costing_every_turn_is_caught_by_the_round_change_checker() -> None:
    """The engine before the proposer schedule: every turn of the crashed validator needs a round change."""
    result = run_seed("pbft-never-skips", 4, 0, scenario="one-down")
    assert result.kind == "round_changes", result.violation


def test_a_schedule_nodes_disagree_on_is_caught_as_lost_liveness_never_as_a_fork() -> None:
    """Proposers chosen from each node's own commit seals (which differ between nodes): nodes then
    disagree about who proposes in every round. Proposer identity plays no part in safety, so what
    the simulator sees is lost liveness."""
    kinds = [r.kind for r in (run_seed("pbft-own-seals-schedule", 4, s) for s in range(60)) if not r.ok]
    assert kinds and set(kinds) == {"liveness"}, kinds


def test_an_engine_that_keeps_the_old_quorum_after_a_change_is_caught_by_the_certificate_checker() -> None:
    """Once the spare joins (n 4 -> 5, quorum 3 -> 4), an engine still counting 3 votes decides blocks
    whose certificates do not prove them under the set in force at their height."""
    found = first_failure("pbft-old-quorum", range(20), valset=True)
    assert found.kind == "certificate", found.violation
    assert "validators in force at its height" in found.violation


def test_a_node_that_activates_a_change_one_height_late_is_caught() -> None:
    """For one height the node's engine works with the old set while the chain has put the new one in
    force: the valset checker compares every honest engine's set (its size, its seat, its proposer)
    with the chain's. A late rotation is invisible in those when the node is not the one rotated: it
    only fails to verify the new key's votes, which costs liveness when another validator is faulty
    too, and the liveness phase reports that."""
    kinds = [r.kind for r in (run_seed("pbft-late-activation", 4, s, valset=True) for s in range(20)) if not r.ok]
    assert kinds.count("valset") >= 10 and set(kinds) <= {"valset", "liveness"}, kinds
