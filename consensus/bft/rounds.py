"""Validator-set arithmetic: fault tolerance, quorum size, proposer rotation, round timeouts."""

from __future__ import annotations

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
    """Round-robin over the genesis validator order, shifted by one per height and per round."""
    return (height + round) % n


def round_timeout_ticks(round: int, base_ticks: int, max_ticks: int) -> int:
    """base * 2^round, capped at `max_ticks`: each failed round gives the network longer than the last."""
    return min(base_ticks << min(round, 40), max_ticks)
