"""The BFT proposer schedule under the simulator: a validator crashed for good (or for long, then
back) among the usual faults, every seed clean; and, on a calm network with one validator down,
few heights need a round change (`round_changes`) and a restarted validator proposes again
(`rejoin`).

"pbft" runs the production schedule (retries after 16, 32, 64, then every 128 missed turns), which
a short run hardly retries; "pbft-fast-retry" runs one with retries after 2, 4, then every 8
missed turns and a window of 6 turns, so that retries, resets and validators falling out of the
window happen in nearly every seed.
"""

from __future__ import annotations

from tests.sim.runner import run_seeds
from tests.sim.test_sim_pbft import assert_all_clean


def test_pbft_one_validator_crashed_for_good_among_the_usual_faults() -> None:
    done = assert_all_clean(run_seeds("pbft", 4, range(200), scenario="down"))
    assert sum(r.heights for r in done) > 200 * 5
    assert_all_clean(run_seeds("pbft", 7, range(40), scenario="down"))


def test_pbft_one_validator_crashed_then_restarted_among_the_usual_faults() -> None:
    assert_all_clean(run_seeds("pbft", 4, range(150), scenario="down-restart"))


def test_fast_retries_with_one_validator_down_or_back() -> None:
    assert_all_clean(run_seeds("pbft-fast-retry", 4, range(150), scenario="down"))
    assert_all_clean(run_seeds("pbft-fast-retry", 4, range(150), scenario="down-restart"))
    assert_all_clean(run_seeds("pbft-fast-retry", 4, range(100)))
    assert_all_clean(run_seeds("pbft-fast-retry", 7, range(30), scenario="down"))


def test_with_one_validator_down_few_heights_need_a_round_change() -> None:
    """The property the schedule exists for: a crashed validator costs a round change only on its
    retries, not on every turn (checked by the simulator's `round_changes` checker)."""
    assert_all_clean(run_seeds("pbft", 4, range(4), scenario="one-down"))
    assert_all_clean(run_seeds("pbft", 7, range(2), scenario="one-down"))
    assert_all_clean(run_seeds("pbft-fast-retry", 4, range(4), scenario="one-down"))


def test_a_validator_that_comes_back_proposes_again() -> None:
    assert_all_clean(run_seeds("pbft", 4, range(3), scenario="one-back"))
    assert_all_clean(run_seeds("pbft-fast-retry", 4, range(3), scenario="one-back"))
