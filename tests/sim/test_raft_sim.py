"""The Raft engine under the deterministic simulator: crash-restarts, delays, drops, duplicates,
reordering and partitions (no Byzantine faults: Raft does not claim to survive them).

The checkers are the simulator's own: agreement and continuity on every commit, a valid
certificate on every committed block, no node casting two votes in one term or sending two
different entries for one index of its term (see `describe_raft`), no engine raising, and a
liveness phase after the heal. The seed ranges are fixed so that CI is reproducible;
`./scripts/simulate --engine raft` runs any other range.

A broken engine that does not persist its term and vote must be caught. Random crashes rarely land
inside an election, so that test (and one for the real engine) uses `runner.CrashStorm`, the
standard fault mix plus a crash every few ticks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from consensus.api import EngineContext
from consensus.raft import RaftEngine
from consensus.raft.log import Entry, HardState
from tests.sim.engines import ENGINES
from tests.sim.runner import SeedResult, run_seed, run_seeds, storm


def assert_all_clean(results: Iterable[SeedResult]) -> list[SeedResult]:
    done = list(results)
    failures = [f"seed {r.seed}: {r.violation}\n  replay: {r.replay_command()}" for r in done if not r.ok]
    assert not failures, "\n".join(failures)
    return done


class NeverPersistsTermOrVote(RaftEngine):
    """The bug the issue cites from a Python Raft library: term and vote live in memory only.

    After a restart the node takes its term from its last log entry and has voted for nobody, so it
    can vote twice in one term. (It still records that implied term, so that its restart is clean
    and what the simulator reports is the double vote itself, not a refused restore.)
    """

    def _hard_state(self) -> HardState:
        return HardState(self.log.last_term or 0, None)

    def _append(self, entry: Entry) -> None:
        super()._append(entry)
        self._hard_dirty = True


def test_raft_5_validators_150_seeds() -> None:
    done = assert_all_clean(run_seeds("raft", 5, range(150)))
    assert sum(r.heights for r in done) > 150 * 20, "the seeds make real progress, not just survive"
    counters: dict[str, int] = {}
    for result in done:
        for name, value in result.counters.items():
            counters[name] = counters.get(name, 0) + value
    # Not a vacuous pass: the paths that only faults reach are taken.
    for name in ("pre_vote_refused", "vote_refused", "append_rejected", "restamped_entries",
                 "leader_lost_quorum", "stepped_down_behind_chain", "stale_term"):
        assert counters.get(name, 0) > 0, name


def test_raft_5_validators_50_harsh_seeds() -> None:
    """Every seed with partitions, crash-restarts, drops and late messages."""
    assert_all_clean(run_seeds("raft", 5, range(50), harsh=True))


def test_raft_3_and_7_validators() -> None:
    assert_all_clean(run_seeds("raft", 3, range(30)))
    assert_all_clean(run_seeds("raft", 7, range(10)))


def test_raft_single_validator_runs_a_chain_alone() -> None:
    done = assert_all_clean(run_seeds("raft", 1, range(10)))
    assert all(r.heights >= 3 for r in done)


def test_raft_survives_a_crash_storm() -> None:
    failures = [f"seed {s}: {v}" for s in range(40) if (v := storm(ENGINES["raft"], 5, s)) is not None]
    assert not failures, "\n".join(failures) + '\n  replay: storm(ENGINES["raft"], 5, SEED, print)'


def test_an_engine_that_never_persists_term_and_vote_is_caught_voting_twice() -> None:
    """Figure 2: currentTerm and votedFor are persistent state. Forgetting them lets a restarted
    node vote again in a term it already voted in, so two leaders can share a term."""

    def make(ctx: EngineContext) -> RaftEngine:
        return NeverPersistsTermOrVote(ctx)

    broken = dataclasses.replace(ENGINES["raft"], name="raft-no-hard-state", make=make)
    for seed in range(30):
        violation = storm(broken, 5, seed)
        if violation is not None:
            assert violation.kind == "equivocation", violation
            return
    raise AssertionError("the simulator did not catch an engine that forgets its term and vote")


def test_a_raft_seed_replays_exactly() -> None:
    first: list[str] = []
    second: list[str] = []
    a = run_seed("raft", 5, 7, trace=first.append)
    b = run_seed("raft", 5, 7, trace=second.append)
    assert a == b
    assert first == second and len(first) > 100
    assert any("COMMITS" in line for line in first) and any("VoteResponse" in line for line in first)


def test_raft_elects_when_round_trips_outgrow_the_election_timeout() -> None:
    """Seeds that once failed liveness: three survivors of five, delays up to 8 ticks each way
    against election timeouts of 6..11 ticks; the candidates' votes kept arriving after they had
    timed out. Election timeouts now back off (RaftLimits.max_election_backoff)."""
    for seed in (3488, 7521):
        result = run_seed("raft", 5, seed)
        assert result.ok, f"{result.violation}\n  replay: {result.replay_command()}"
