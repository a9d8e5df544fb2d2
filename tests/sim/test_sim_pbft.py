"""The BFT engine under the deterministic simulator: hundreds of seeds of faults, every one clean.

Each seed mixes message delays, drops, duplicates and reordering, partitions (an isolated
proposer or decider, 2-2 splits, flapping links), crash-restarts that lose unpersisted state, and
up to f Byzantine validators; the checkers (agreement, continuity, certificates, validity, no
honest equivocation) run on every commit and every signed message, and a liveness phase must
then produce blocks within its bound. The seed ranges are fixed so that CI is reproducible;
`./scripts/simulate` runs any other range.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.sim.runner import SeedResult, run_seed, run_seeds


def assert_all_clean(results: Iterable[SeedResult]) -> list[SeedResult]:
    done = list(results)
    failures = [f"seed {r.seed}: {r.violation}\n  replay: {r.replay_command()}" for r in done if not r.ok]
    assert not failures, "\n".join(failures)
    return done


def test_pbft_4_validators_300_seeds() -> None:
    done = assert_all_clean(run_seeds("pbft", 4, range(300)))
    assert sum(r.heights for r in done) > 300 * 10, "the seeds make real progress, not just survive"


def test_pbft_7_validators_100_seeds() -> None:
    assert_all_clean(run_seeds("pbft", 7, range(100)))


def test_pbft_4_validators_100_harsh_seeds() -> None:
    """Every seed with partitions, crash-restarts, late messages and isolated deciders."""
    assert_all_clean(run_seeds("pbft", 4, range(100), harsh=True))


def test_pbft_single_validator_runs_a_chain_alone() -> None:
    done = assert_all_clean(run_seeds("pbft", 1, range(20)))
    assert all(r.heights >= 3 for r in done)


def test_byzantine_validators_are_exercised() -> None:
    """Not a vacuous pass: the simulated traitors' lies reach the honest engines and are refused."""
    counters: dict[str, int] = {}
    for result in assert_all_clean(run_seeds("pbft", 4, range(60))):
        for name, value in result.counters.items():
            counters[name] = counters.get(name, 0) + value
    for name in ("dropped_bad_signature", "dropped_equivocation", "dropped_malformed", "dropped_wrong_chain",
                 "dropped_block_rejected", "dropped_far_future_round", "round_skips", "decided_replies"):
        assert counters.get(name, 0) > 0, name


def test_a_seed_replays_exactly() -> None:
    first: list[str] = []
    second: list[str] = []
    a = run_seed("pbft", 4, 11, trace=first.append)
    b = run_seed("pbft", 4, 11, trace=second.append)
    assert a == b
    assert first == second and len(first) > 100
    assert any("COMMITS" in line for line in first)
