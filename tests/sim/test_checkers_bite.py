"""The simulator's checkers catch broken engines, within a bounded number of seeds.

A simulator that never fails proves nothing by itself; these engines each break one rule, and the
simulator must report the very violation that rule prevents.
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
)
from tests.sim.world import Violation, World

SAFETY = ("agreement", "continuity")


def first_failure(engine: str, seeds: range, harsh: bool = False) -> SeedResult:
    for seed in seeds:
        result = run_seed(engine, 4, seed, harsh=harsh)
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
