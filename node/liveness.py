"""Can the chain make progress, as this node sees it: the numbers an operator needs at a glance when
commits stop, and one plain summary of them (`consensus_health`).

Pure: the node hands in what it knows (validators in touch, the engine's quorum, when the chain last
committed, how many rounds or elections timed out since) and gets back the JSON for /v1/status and
for the 504 commit_timeout answer. Nothing here reads a clock or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# What one unit of `rounds_without_commit` is, by engine, for the sentence people read.
ROUND_WORDS: Mapping[str, str] = MappingProxyType({"pbft": "round timeouts", "raft": "election timeouts"})


def bft_max_faulty(n: int) -> int:
    return (n - 1) // 3


def majority(n: int) -> int:
    return n // 2 + 1


@dataclass(frozen=True)
class Liveness:
    """One node's view of whether consensus can progress."""

    consensus: str  # "pbft" or "raft"
    validators: int  # n: validators in force
    max_faulty: int  # f: validators that may fail with the chain still committing
    quorum: int  # validators that must take part for a block to commit
    connected: int  # validators this node is in touch with right now, itself included
    seconds_since_commit: float  # since the timestamp of the last committed block
    rounds_without_commit: int  # PBFT round timeouts / Raft election timeouts since the last commit
    syncing: bool
    blocks_behind: int
    running: bool
    fatal_error: str | None
    stall_rounds: int  # this many rounds_without_commit and more is reported as a stall

    @property
    def health(self) -> str:
        """"ok", or what is wrong, worst first, in words an operator can act on."""
        if not self.running:
            return f"halted: {self.fatal_error}" if self.fatal_error else "stopped: the node is not running"
        if self.connected < self.quorum:
            verb = "is" if self.connected == 1 else "are"
            return f"stalled: only {self.connected} of the {self.quorum} validators needed {verb} connected"
        if self.syncing:
            return f"syncing: {self.blocks_behind} blocks behind"
        if self.rounds_without_commit >= self.stall_rounds:
            word = ROUND_WORDS.get(self.consensus, "rounds")
            return f"stalled: {self.rounds_without_commit} {word} without a commit"
        return "ok"

    def gauges(self) -> dict[str, float]:
        """For /metrics (`node.metrics.NodeMetrics.watch_liveness`): the same figures as numbers."""
        return {
            "validators_connected": self.connected,
            "quorum": self.quorum,
            "seconds_since_commit": self.seconds_since_commit,
            "rounds_without_commit": self.rounds_without_commit,
            "consensus_ok": 1.0 if self.health == "ok" else 0.0,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "validators": self.validators,
            "max_faulty": self.max_faulty,
            "quorum": self.quorum,
            "validators_connected": self.connected,
            "seconds_since_commit": self.seconds_since_commit,
            "rounds_without_commit": self.rounds_without_commit,
        }


def quorum_of(consensus: str, n: int, engine_status: Mapping[str, Any]) -> tuple[int, int]:
    """(max_faulty, quorum) for `n` validators: the engine's own figures when it reports them (PBFT
    does), else what the engine kind implies (Raft: a majority)."""
    f, q = engine_status.get("max_faulty"), engine_status.get("quorum")
    if type(f) is int and type(q) is int:
        return f, q
    if consensus == "raft":
        return (n - 1) // 2, majority(n)
    f = bft_max_faulty(n)
    return f, n - f


def explain(view: Mapping[str, Any]) -> str:
    """The chain's state in one clause, from the JSON `consensus_health` and `liveness` of /v1/status
    (or of a 504 commit_timeout body): "the chain has not committed for 40 s and only 2 of the 3
    validators needed are connected". Tolerates missing fields (an older node): then says less."""
    health = view.get("consensus_health")
    live = view.get("liveness")
    live = live if isinstance(live, Mapping) else {}
    since = live.get("seconds_since_commit")
    since_text = f"{since:.0f} s" if isinstance(since, (int, float)) else None
    if not isinstance(health, str):
        return f"the chain last committed {since_text} ago" if since_text else ""
    if health == "ok":
        connected, needed, n = live.get("validators_connected"), live.get("quorum"), live.get("validators")
        text = f"the chain last committed {since_text} ago" if since_text else "consensus reports ok"
        if connected is not None and needed is not None and n is not None:
            text += f"; {connected} of {n} validators are connected ({needed} needed)"
        return text
    kind, _, reason = health.partition(": ")
    if kind == "stalled":
        return f"the chain has not committed for {since_text} and {reason}" if since_text else \
            f"the chain is stalled: {reason}"
    if kind == "syncing":
        return f"this node is catching up ({reason})"
    return f"this node is {health}"
