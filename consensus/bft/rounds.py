"""Validator-set arithmetic: fault tolerance, quorum size, proposer schedule, round timeouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_ROUND = 0xFFFF_FFFE  # rounds are u32 on the wire; 0xFFFFFFFF means "no round"
MAX_VALIDATORS = 1024


def max_faulty(n: int) -> int:
    """f: the most Byzantine validators out of n that the protocol tolerates (n >= 3f + 1)."""
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """The smallest q such that two q-sets of n validators share at least f + 1 members.

    ceil((n + f + 1) / 2); for n = 3f + 1 this is 2f + 1. Any two quorums then overlap in an honest
    validator, and n - f honest validators can still form one.
    """
    return (n + max_faulty(n)) // 2 + 1


def proposer_index(height: int, round: int, n: int) -> int:
    """Round-robin over the genesis validator order, shifted by one per height and per round.

    This is the proposer of every round above 0. Round 0 follows `ProposerSchedule`, which starts
    from the same rotation (validator `height % n` has its *turn* at `height`).
    """
    return (height + round) % n


def _turns_in(validator: int, low: int, high: int, n: int) -> int:
    """How many heights in [low, high] are turns of `validator` (height % n == validator)."""
    if high < low:
        return 0
    return (high - validator) // n - (low - 1 - validator) // n


@dataclass(frozen=True)
class ProposerSchedule:
    """Who proposes in round 0: the rotation, minus validators the committed chain shows absent.

    Its only input is the `proposer` field of the last committed block headers, which every honest
    node holds identically (commit seals are not an input: each node keeps the quorum of seals it
    happened to collect). A validator's *missed turns* are its turns since the last block it
    proposed. At its turn a validator proposes round 0 when it missed none, and otherwise only on
    retries after `first_retry_turns` missed turns, then twice as many, and so on up to every
    `max_retry_turns`: a crashed validator costs a round timeout per retry instead of one per turn,
    and a validator that is back proposes again at its next retry, which resets its count. In its
    place proposes the next validator in the rotation that missed no turn (or, if there is none,
    the skipped validator itself). The engine gives round 0 of a retried proposer a shorter timeout
    (`EngineConfig.retry_round_timeout_ticks`) until its proposal arrives.

    The rule reads the last `window_blocks(n)` headers only, so that a restarted or syncing node
    can compute it from its store. A validator that proposed nothing in that window while the
    window does not reach genesis has missed an unknown number of turns; it is retried at its
    turns numbered a multiple of `max_retry_turns` (turn number = height // n).

    Only round 0 follows this schedule: later rounds rotate over every validator by
    `proposer_index`, so a round change never depends on it and two nodes that disagree about the
    schedule (one lacking history, say) lose at most a round 0, never safety: a proposer's
    identity plays no part in why two quorums cannot commit different blocks.

    These values are part of the protocol: every validator must use the same ones.
    """

    window_turns: int = 64
    max_window_blocks: int = 4096
    first_retry_turns: int = 16
    max_retry_turns: int = 128

    def __post_init__(self) -> None:
        for name in ("first_retry_turns", "max_retry_turns"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value}")
        if self.first_retry_turns > self.max_retry_turns:
            raise ValueError("first_retry_turns must not exceed max_retry_turns")
        if self.window_turns < 1 or self.max_window_blocks < 1:
            raise ValueError("the window must hold at least one block")

    def window_blocks(self, n: int) -> int:
        """How many of the most recent committed headers the rule reads."""
        return min(self.window_turns * n, self.max_window_blocks)

    def retry_due(self, missed: int) -> bool:
        """Whether a validator that missed `missed` turns in a row proposes at this turn."""
        if missed == 0:
            return True
        if missed < self.first_retry_turns:
            return False
        if missed < self.max_retry_turns:
            return missed & (missed - 1) == 0  # first_retry_turns * 2^k
        return missed % self.max_retry_turns == 0

    def round0_proposer(self, height: int, n: int, recent: Sequence[int]) -> int:
        """The proposer of round 0 at `height` (>= 1); see `round0`."""
        return self.round0(height, n, recent)[0]

    def round0(self, height: int, n: int, recent: Sequence[int]) -> tuple[int, bool]:
        """The proposer of round 0 at `height` (>= 1), and whether it is being retried (it missed its
        last turns, or proposed nothing in a window that does not reach genesis).

        `recent[i]` is the index of the proposer of block `height - len(recent) + i` (the last one
        is the parent's), or -1 for a proposer outside the validator set. Only the last
        `window_blocks(n)` entries count.
        """
        base = proposer_index(height, 0, n)
        if n == 1:
            return base, False
        window = list(recent)
        del window[:max(0, len(window) - self.window_blocks(n))]
        first = height - len(window)  # the height of window[0]
        complete = first <= 1  # the window reaches back to genesis
        last_block = [-1] * n  # the last height each validator proposed, within the window
        for offset, who in enumerate(window):
            if 0 <= who < n:
                last_block[who] = first + offset

        def missed(v: int) -> int | None:
            since = last_block[v]
            if since < 0:
                if not complete:
                    return None
                since = 0
            return _turns_in(v, since + 1, height - 1, n)

        own = missed(base)
        if own is None:
            if (height // n) % self.max_retry_turns == 0:
                return base, True
        elif self.retry_due(own):
            return base, own > 0
        for step in range(1, n):
            candidate = (base + step) % n
            if missed(candidate) == 0:
                return candidate, False
        return base, False  # nobody is known present (a node short of history): the plain rotation


def round_timeout_ticks(round: int, base_ticks: int, max_ticks: int) -> int:
    """base * 2^round, capped at `max_ticks`: each failed round gives the network longer than the last."""
    return min(base_ticks << min(round, 40), max_ticks)
