"""Validator-set change schedules: the committee the simulator holds, and what it asks of the chain.

With `--valset` the simulated genesis has a committee of `COMMITTEE` members whose keys the
simulator holds, and one node more than the validators: the *spare*, which follows the chain from
the start as an observer. Each seed draws a schedule of one to `MAX_CHANGES` changes, made one at a
time (one change in flight, as the ledger rules require): the spare is added, a validator removed
(only after the add, so the set never shrinks below the genesis size and the fault budget drawn for
n validators stays within f of every set in force), or an honest validator's key rotated (the node
restarts with its new key once its chain reaches the activation height, as an operator would).

A change is driven through the real chain: member 0's signed `propose` transaction goes to every
node's mempool (again every `RESUBMIT_TICKS` until a block of the honest chain holds it), then
member 1's approving `vote` (2 of 3 members pass it). The block that holds the vote decides the
change; the world then requires the set of that block's height + ACTIVATION_DELAY, read from the
honest committed state, to be exactly the set the schedule expects (`valset` violation otherwise),
and waits until that height is committed before starting the next change.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from ledger import keys, valset
from ledger.governance import GenesisGovernance, decode_action
from ledger.tx import Propose, Transaction, Vote, sign_tx

COMMITTEE = 3
LIFETIME_BLOCKS = 100_000  # proposals never expire in a seed: every change must go through
MAX_CHANGES = 3
MAX_GAP_TICKS = 20  # ticks between a change coming into force and the next proposal
RESUBMIT_TICKS = 20


def committee_key(member: int) -> keys.PrivateKey:
    return keys.PrivateKey.from_seed(hashlib.sha256(b"ledgerd-sim-committee:%d" % member).digest())


def rotated_key(node: int, step: int) -> keys.PrivateKey:
    """The key node `node` rotates to in the schedule's `step`-th change (an Ed25519 key: the
    rotation's proof of possession is a real signature; consensus messages use the id's HMAC)."""
    return keys.PrivateKey.from_seed(hashlib.sha256(b"ledgerd-sim-rotated:%d:%d" % (node, step)).digest())


def committee_governance() -> GenesisGovernance:
    return GenesisGovernance(tuple((committee_key(m).address, 1) for m in range(COMMITTEE)), 2, 3,
                             LIFETIME_BLOCKS)


@dataclass(frozen=True)
class Change:
    action: str  # add-validator, remove-validator or rotate-validator-key
    node: int  # the node it concerns (the spare for an add)
    gap: int  # ticks to wait, after the previous change is in force (or from the start), to propose it
    new_id: str = ""  # a rotation's new node id


def make_schedule(rng: random.Random, n: int, faulty: frozenset[int], chaos_ticks: int,
                  rotations: bool = True) -> tuple[Change, ...]:
    """One to MAX_CHANGES changes over validators 0..n-1 and the spare n. `faulty`: nodes that are
    Byzantine or down for good, whose keys are never rotated (nobody would restart them).
    `rotations`: whether the chain rotates a key in one step (not under Raft's single-server
    changes); without, the schedule adds and removes only, and ends early when neither is possible."""
    members = list(range(n))
    out: list[Change] = []
    for step in range(rng.randint(1, MAX_CHANGES)):
        gap = rng.randrange(max(1, chaos_ticks // 8)) if step == 0 else rng.randrange(MAX_GAP_TICKS)
        options = ["rotate-validator-key"] if rotations else []
        if n not in members and not any(c.action == "add-validator" for c in out):
            options.append("add-validator")
        if len(members) > n:
            options.append("remove-validator")
        if not options:
            break
        action = rng.choice(options)
        if action == "add-validator":
            members.append(n)
            out.append(Change(action, n, gap))
        elif action == "remove-validator":
            node = rng.choice(members)
            members.remove(node)
            out.append(Change(action, node, gap))
        else:
            candidates = [m for m in members if m not in faulty]
            if candidates:
                node = rng.choice(candidates)
                out.append(Change(action, node, gap, rotated_key(node, len(out)).address))
    return tuple(out)


@dataclass
class Driver:
    """Where the schedule stands: which change, which transaction of it is awaited, since when."""

    chain_id: str
    schedule: tuple[Change, ...]
    ids: list[str]  # every node's id in the chain's eyes (the spare's too), by node index
    members: list[int]  # the node indices of the set the last change put in force, in proposer order
    step: int = 0
    phase: str = "wait"  # wait: for ready_at; propose / vote: the transaction awaited; force: the height
    ready_at: int = 0
    offered_at: int = -RESUBMIT_TICKS
    tx: Transaction | None = None
    proposal: str = ""
    effective: int = 0  # the awaited change's activation height (phase "force")
    done: list[str] = field(default_factory=list)  # "add n4 in force at 12", ...

    def __post_init__(self) -> None:
        if self.schedule:
            self.ready_at = self.schedule[0].gap

    @property
    def change(self) -> Change | None:
        return self.schedule[self.step] if self.step < len(self.schedule) else None

    def due(self, now: int) -> Transaction | None:
        """The transaction to offer to the nodes now, if any (first offers and resubmissions)."""
        change = self.change
        if change is None:
            return None
        if self.phase == "wait":
            if now < self.ready_at:
                return None
            self.phase = "propose"
            self.tx = sign_tx(committee_key(0), self.chain_id, self.step,
                              Propose(*decode_action(change.action, self._args(change))))
        if self.phase in ("propose", "vote") and now - self.offered_at >= RESUBMIT_TICKS:
            self.offered_at = now
            return self.tx
        return None

    def _args(self, change: Change) -> dict[str, str]:
        old = self.ids[change.node]
        if change.action == "add-validator":
            return {"node_id": old, "p2p_url": f"ws://127.0.0.1:{9000 + change.node}", "name": f"n{change.node}"}
        if change.action == "remove-validator":
            return {"node_id": old}
        new = rotated_key(change.node, self.step)
        proof = new.sign(valset.rotation_message(self.chain_id, old, new.address)).hex()
        return {"node_id": old, "new_node_id": new.address, "proof": proof}

    def committed(self, height: int, hashes: set[str]) -> Change | None:
        """The honest chain decided block `height` holding `hashes`; returns the change that this
        block decided (its vote is in it), whose set is then due at height + ACTIVATION_DELAY."""
        change = self.change
        if change is None or self.tx is None or self.tx.hash not in hashes:
            return None
        if self.phase == "propose":
            self.proposal = self.tx.hash
            self.phase, self.offered_at = "vote", -RESUBMIT_TICKS
            self.tx = sign_tx(committee_key(1), self.chain_id, self.step, Vote(self.proposal, True))
            return None
        self.phase, self.tx = "force", None
        self.effective = height + valset.ACTIVATION_DELAY
        if change.action == "add-validator":
            self.members.append(change.node)
        elif change.action == "remove-validator":
            self.members.remove(change.node)
        else:
            self.ids[change.node] = change.new_id  # its place in the order goes to the new key
        return change

    def expected(self) -> tuple[str, ...]:
        """The ids the set must hold once the awaited change is in force."""
        return tuple(self.ids[m] for m in self.members)

    def in_force(self, now: int) -> None:
        """The honest chain reached the awaited change's activation height."""
        change = self.change
        assert change is not None and self.phase == "force"
        self.done.append(f"{change.action.split('-')[0]} n{change.node} at {self.effective}")
        self.step += 1
        self.phase = "wait"
        if self.change is not None:
            self.ready_at = now + self.change.gap
