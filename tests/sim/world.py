"""One simulated cluster: nodes running the real node core, their disks, a faulty network, a
workload, and the checkers.

Time is a tick counter. Per tick: scheduled faults fire, every message due is delivered (each
delivery is posted to the destination's `NodeCore`, which then runs until it has nothing to do),
transactions reach the nodes (each through the real mempool's admission), lagging nodes sync
blocks from a peer, and every live node's core runs its tick. All randomness comes from
`random.Random` instances derived from the seed, and nothing iterates a set or dict whose order
could differ between processes, so a seed replays exactly.

Each node (`tests.sim.node.SimNode`) is the daemon's own parts: a `storage.Store` over an
in-memory disk that models durability (`storage.MemoryDisk`: what was not synced is lost in a
crash), the real `Mempool` and `BlockExecutor` on the simulator's clock, the engine restored from
the store, and the `NodeCore` that drives them, with the simulated network as its transport and the
checkers as its commit listener. The genesis is a real `ledger.genesis.Genesis` whose validators
are the simulator's node ids (consensus messages are signed with fast HMACs, see `crypto`), and the
workload is real signed transactions from a few funded keys; a client resubmits the ones not yet
committed, as a real one would. A crash throws the core, engine, mempool and executor away,
possibly halfway through an action list (the disk handle or the transport raises `SimCrash` after
k writes and sends), crashes the disk, and a restart reopens the store and builds everything
again, as the daemon does.

Faults, drawn per seed by `make_plan`: delays, drops, duplicates and reordering; partitions (an
isolated proposer, the next node to decide cut off right after deciding, single nodes, 2-2 or
3-4 splits, minorities, flapping links); crash-restarts, between steps or halfway through an
action list; disk faults (a failed write, a failed sync, a failing read: the node must halt, and
halts for good, counting towards f); and up to f Byzantine validators (see `byzantine`), whose
real engines' traffic the adversary rewrites on its way out. Block sync is modelled as the daemon
does it: every few ticks a node that is behind a reachable peer loads that peer's certified blocks
from the peer's store, verifies the certificates and signatures, and posts them to its own core.

Checkers run incrementally, the moment something happens, inside the delivery or tick that caused
it (which is stronger than checking after each delivery). On every acknowledged commit (what the
core's listener hears, after the block's batch is durable):
    agreement   no two honest nodes commit different blocks at one height
    continuity  a node's next block extends its own last block: committed blocks never change
    certificate every committed block carries a certificate the engine's verifier accepts
    validity    no honest node commits a block its own re-execution rejects (a "poisoned" block:
                the core raises Rejected on such a commit, reported here)
on every restart and every halt:
    durability  nothing a node acknowledged as committed is lost: its reopened store's head is at
                least the acknowledged height, with the same blocks
    halt        a node whose disk failed stops at once: its store did not advance, it neither
                acknowledges, writes nor sends anything after the failure
and on every message an honest node sends:
    no equivocation  an honest node never signs two different contents for one slot
plus: an engine never raises on any input, calls the BlockChecker at most once per block
(when the engine promises that), the run stays within its step budget, and at the end the app
state agrees (the stored state of honest nodes at one height is byte for byte the same).

Scenarios (`scenario`, default "mixed", the random mix above). "down" and "down-restart" add to
that mix one honest validator that crashes early for good, or for a long time and then restarts
(the Byzantine, crash and disk-fault budgets shrink to keep at most f faulty). The calm ones have
no faults but message delays and one validator down from the start, and run `CALM_TICKS`:
"one-down" checks
    round_changes  at most `MAX_ROUND_CHANGE_SHARE` of the heights needed a round change (with a
                   plain rotation a crashed validator of n costs one height in n)
and "one-back", whose validator restarts at `CALM_RESTART_AT`, checks
    rejoin         the restarted validator proposes a committed block again.
A (re)started engine gets the proposers of the last blocks in its store, as the daemon's does, and
block sync's `ChainAdvanced` (sent by the core) carries the synced blocks' proposers.

Validator-set changes (`valset`, see `tests.sim.changes`): the genesis has a committee, the spare
node n follows as an observer, and the committee's schedule runs through the real chain. Each
node reads the set of every height from its own committed state (`node.core.validators.
ValidatorSets`, handed to its engine, executor, block sync and the core's last check of synced
blocks, as the daemon does). The world keeps the set of each height as the honest chain fixes it
(read from the committed state of the first honest node to decide the height two below), and
    certificate  is judged under that set of the block's height
    valset       the set changes exactly at the height the committee's change says, to exactly
                 the set it says; and every honest engine works on its height with that height's
                 set (its size, whether the node has a seat, a proposer from the set)
    liveness     counts consensus decisions by a quorum of the set in force at the end
A rotated node is restarted with its new key once its chain reaches the change (as an operator
would); the removed ones keep running as observers.

Then the liveness phase: partitions heal, drops stop, crashed nodes restart (except those down
for good, so that at most f nodes remain faulty counting the Byzantine ones), and within
`liveness_bound_timeouts` times the seed's largest round timeout every live honest node must
reach `liveness_heights` blocks beyond the best honest height at the heal, and at least a quorum
of them must have decided a new height by consensus (block sync alone does not count: commits by
consensus and by block sync are counted apart, and a node's sync may fairly beat the last COMMIT
messages of a height to it).
"""

from __future__ import annotations

import hashlib
import heapq
import random
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from consensus.api import EngineConfig, EngineContext
from ledger import governance, keys, valset
from ledger.block import Block
from ledger.errors import Rejected
from ledger.genesis import Genesis, Validator
from ledger.state import StateOverlay
from ledger.tx import Record, Transaction, sign_tx
from ledger.valset import ACTIVATION_DELAY
from node.core.executor import BlockExecutor, BuildLimits
from node.core.machine import Box, CommittedBlock, CoreSettings
from node.core.mempool import Mempool, MempoolLimits
from node.core.validators import ValidatorSets
from node.metrics import NodeMetrics
from node.node import recent_proposers
from storage import DiskFaults, KeyValueStore, MemoryBackend, MemoryDisk, StorageError, Store
from storage.backend import prefix_stop
from storage.store import STATE
from tests.sim.byzantine import POISON_APP_HASH, AdversaryContext
from tests.sim.changes import COMMITTEE, Change, Driver, committee_governance, committee_key, make_schedule
from tests.sim.crypto import HmacSigner, HmacVerifier, node_id
from tests.sim.engines import EngineSpec
from tests.sim.node import CountingChecker, SimBackend, SimCrash, SimListener, SimNode, SimTransport, Violation

CHAIN_ID = "sim-chain"
TICK_MS = 50
GENESIS_TIME_MS = 1_700_000_000_000
SYNC_INTERVAL_TICKS = 10
SYNC_BATCH = 8
MAX_TXS_PER_BLOCK = 3
MAX_MEMPOOL = 256
MAX_INBOX = 100_000  # the core's inbox is drained after every post; this bound is never reached
SENDERS = 3  # funded keys the workload's transactions come from
RESUBMIT_EVERY_TICKS = 20  # the client sends its oldest uncommitted transactions again this often
RESUBMIT_PER_SENDER = 3
PARTITION_KINDS = ("isolate_proposer", "isolate_decider", "isolate_one", "split", "flapping", "minority")
DISK_FAULT_KINDS = ("write", "sync", "read")
# Where a failing read lands: state (execution, admission), engine records and meta (a restart),
# blocks (a restart's durability check and proposer history, serving block sync).
READ_FAULT_PREFIXES = (b"s", b"e", b"m", b"b")
SCENARIOS = ("mixed", "down", "down-restart", "one-down", "one-back")
CALM_SCENARIOS = ("one-down", "one-back")
CALM_TICKS = 4000
CALM_RESTART_AT = 600
MAX_ROUND_CHANGE_SHARE = 0.1


@dataclass(frozen=True)
class Partition:
    start: int
    end: int
    kind: str
    flap_ticks: int = 0


@dataclass(frozen=True)
class Crash:
    node: int
    at: int
    down_ticks: int | None  # None: never restarts (counts towards f)
    mid_step: bool  # crash halfway through the node's next non-empty action list


@dataclass(frozen=True)
class DiskFault:
    node: int
    at: int
    kind: str  # one of DISK_FAULT_KINDS: the node's next such operation fails
    prefix: bytes = b""  # for "read": reads of keys under it fail


@dataclass(frozen=True)
class FaultPlan:
    config: EngineConfig
    delay_max: int
    drop_p: float
    dup_p: float
    long_delay_p: float
    tx_p: float
    partitions: tuple[Partition, ...]
    crashes: tuple[Crash, ...]
    byzantine: tuple[tuple[int, frozenset[str]], ...]
    disk_faults: tuple[DiskFault, ...] = ()

    def summary(self) -> str:
        byz = ", ".join(f"n{i}: {'+'.join(sorted(b))}" for i, b in self.byzantine) or "none"
        parts = ", ".join(f"{p.kind} [{p.start},{p.end})" for p in self.partitions) or "none"
        crashes = ", ".join(
            f"n{c.node}@{c.at}" + ("(mid-step)" if c.mid_step else "")
            + ("forever" if c.down_ticks is None else f"+{c.down_ticks}") for c in self.crashes) or "none"
        disk = ", ".join(f"n{d.node}@{d.at} {d.kind}" + (f" {d.prefix!r}" if d.prefix else "")
                         for d in self.disk_faults) or "none"
        c = self.config
        return (f"timeouts {c.round_timeout_ticks}..{c.max_round_timeout_ticks} ticks; "
                f"delay 1..{self.delay_max}; drop {self.drop_p}; dup {self.dup_p}; "
                f"long delays {self.long_delay_p}; tx rate {self.tx_p}\n"
                f"  partitions: {parts}\n  crashes: {crashes}\n  disk faults: {disk}\n  byzantine: {byz}")


def make_plan(
    rng: random.Random, n: int, spec: EngineSpec, chaos_ticks: int, harsh: bool = False,
    scenario: str = "mixed",
) -> FaultPlan:
    """A random mix of faults: each seed draws its own network, partitions, crashes and traitors.

    `harsh` makes partitions, crashes and late messages certain rather than likely: it is the profile
    that finds bugs fastest, while the default mix also keeps calm seeds in the sample. `scenario`:
    see the module doc (the "mixed" draws are the same whatever the other scenarios add).
    """

    def likely(p: float) -> bool:
        return harsh or rng.random() < p

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    f = spec.max_faulty(n)
    one_down = 0 if scenario == "mixed" else 1
    if f < one_down:
        raise ValueError(f"scenario {scenario!r} needs a validator that may fail: n={n} tolerates none")
    if scenario in CALM_SCENARIOS:
        # A round timeout well above the three message delays of a round: a calm network has no round
        # changes but for the missing validator.
        base = rng.choice((12, 16))
        victim = rng.randrange(n)
        down = None if scenario == "one-down" else CALM_RESTART_AT
        return FaultPlan(EngineConfig(round_timeout_ticks=base, max_round_timeout_ticks=base * 8,
                                      retry_round_timeout_ticks=base // 2),
                         delay_max=rng.choice((1, 2)), drop_p=0.0, dup_p=0.0, long_delay_p=0.0, tx_p=0.5,
                         partitions=(), crashes=(Crash(victim, 0, down, False),), byzantine=())
    base = rng.choice((4, 8, 12))
    config = EngineConfig(round_timeout_ticks=base, max_round_timeout_ticks=base * 8,
                          retry_round_timeout_ticks=max(2, base // 2),
                          max_future_heights=rng.choice((2, 10)),
                          max_buffered_messages=rng.choice((64, 4096)))
    byzantine: list[tuple[int, frozenset[str]]] = []
    if spec.adversary is not None and f > 0 and rng.random() < 0.5:
        for i in sorted(rng.sample(range(n), rng.randint(1, f))):
            byzantine.append((i, frozenset(rng.sample(spec.behaviours, rng.randint(1, 4)))))
    del byzantine[f - one_down:]
    honest = [i for i in range(n) if i not in dict(byzantine)]
    crashes: list[Crash] = []
    if likely(0.5):
        for _ in range(rng.randint(1, 4)):
            crashes.append(Crash(rng.choice(honest), rng.randrange(chaos_ticks), rng.randint(1, 12 * base),
                                 rng.random() < 0.5))
    budget = f - len(byzantine) - one_down
    if budget > 0 and rng.random() < 0.3:
        for i in rng.sample(honest, rng.randint(1, budget)):
            crashes.append(Crash(i, rng.randrange(chaos_ticks), None, rng.random() < 0.5))
    partitions: list[Partition] = []
    if n > 1 and likely(0.6):
        for _ in range(rng.randint(1, 3)):
            start = rng.randrange(chaos_ticks)
            end = min(chaos_ticks, start + rng.randint(base, 20 * base))
            partitions.append(Partition(start, end, rng.choice(PARTITION_KINDS), rng.randint(2, 3 * base)))
    if n > 1 and likely(0.3):
        # A storm of isolations of whichever node decides next: a round change that runs without
        # the one validator that knows a block is final is what the re-proposal rule is for.
        for _ in range(rng.randint(3, 10)):
            start = rng.randrange(chaos_ticks)
            partitions.append(Partition(start, min(chaos_ticks, start + rng.randint(2 * base, 8 * base)),
                                        "isolate_decider"))
    delay_max = rng.choice((1, 2, 4, 8))
    drop_p = rng.choice((0.02, 0.1) if harsh else (0.0, 0.0, 0.02, 0.1, 0.25))
    dup_p = rng.choice((0.0, 0.02, 0.1))
    long_delay_p = rng.choice((0.05, 0.1) if harsh else (0.0, 0.0, 0.01, 0.05))
    tx_p = rng.choice((0.05, 0.2, 0.5))
    # Disk faults halt a node for good, so they share the fault budget with traitors and nodes
    # crashed for good. (Drawn last, so that the rest of each seed's plan is what it was before.)
    down_for_good = sorted({c.node for c in crashes if c.down_ticks is None})
    disk_budget = budget - len(down_for_good)
    disk_faults: list[DiskFault] = []
    candidates = [i for i in honest if i not in down_for_good]
    if disk_budget > 0 and candidates and likely(0.3):
        for i in sorted(rng.sample(candidates, rng.randint(1, min(disk_budget, len(candidates))))):
            kind = rng.choice(DISK_FAULT_KINDS)
            prefix = rng.choice(READ_FAULT_PREFIXES) if kind == "read" else b""
            disk_faults.append(DiskFault(i, rng.randrange(chaos_ticks), kind, prefix))
    if one_down:
        # The scenario's validator, among those no other fault takes down for good (the budgets above
        # left room for it); its passing crashes give way to the scenario's own.
        faulty = set(down_for_good) | {d.node for d in disk_faults}
        victim = rng.choice([i for i in honest if i not in faulty])
        crashes = [c for c in crashes if c.node != victim]
        at = rng.randrange(max(1, chaos_ticks // 4))
        down = None if scenario == "down" else rng.randint(chaos_ticks // 4, chaos_ticks // 2)
        crashes.append(Crash(victim, at, down, rng.random() < 0.5))
    return FaultPlan(
        config=config,
        delay_max=delay_max,
        drop_p=drop_p,
        dup_p=dup_p,
        long_delay_p=long_delay_p,
        tx_p=tx_p,
        partitions=tuple(sorted(partitions, key=lambda p: p.start)),
        crashes=tuple(sorted(crashes, key=lambda c: c.at)),
        byzantine=tuple(byzantine),
        disk_faults=tuple(sorted(disk_faults, key=lambda d: d.at)),
    )


@lru_cache(maxsize=SENDERS)
def sender_key(sender: int) -> keys.PrivateKey:
    return keys.PrivateKey.from_seed(hashlib.sha256(b"ledgerd-sim-sender:%d" % sender).digest())


@lru_cache(maxsize=8192)
def sim_tx(number: int) -> Transaction:
    """The workload's `number`-th transaction: a real, signed notarization record, from sender
    `number % SENDERS` with nonce `number // SENDERS` (the mempools order each sender's nonces)."""
    digest = hashlib.sha256(b"%d" % number).hexdigest()
    return sign_tx(sender_key(number % SENDERS), CHAIN_ID, number // SENDERS, Record(f"doc-{number}", digest))


def sim_genesis(spec: EngineSpec, validators: list[str], committee: bool = False) -> Genesis:
    """The simulated chain; with `committee`, one whose committee (keys held by the simulator, see
    `tests.sim.changes`) can change its validator set."""
    members = tuple((committee_key(m).address, 1) for m in range(COMMITTEE)) if committee else ()
    return Genesis(CHAIN_ID, GENESIS_TIME_MS, spec.consensus,
                   tuple(Validator(v, f"n{i}") for i, v in enumerate(validators)),
                   tuple((sender_key(s).address, 1_000_000) for s in range(SENDERS)) + members,
                   committee_governance() if committee else None)


@lru_cache(maxsize=16384)
def signature_valid(tx: Transaction) -> bool:
    """Ed25519, remembered per transaction (hash and signature): every node of every seed checks the
    same few thousand transactions, and a verdict never changes."""
    return tx.signature_valid()


@dataclass
class Stats:
    deliveries: int = 0
    steps: int = 0
    commits: int = 0
    consensus_commits: int = 0  # blocks a node's engine decided
    synced_commits: int = 0  # blocks a node stored by block sync
    halts: int = 0  # nodes halted by a disk fault
    dropped_by_network: int = 0
    liveness_ticks: int | None = None
    counters: dict[str, int] = field(default_factory=dict)  # honest engines' counters, summed


class World:
    def __init__(self, spec: EngineSpec, n: int, seed: int, chaos_ticks: int, liveness_heights: int,
                 liveness_bound_timeouts: int, max_steps: int, trace: Callable[[str], None] | None = None,
                 harsh: bool = False, scenario: str = "mixed", valset: bool = False) -> None:
        master = random.Random(seed)
        self.scenario = scenario
        if scenario in CALM_SCENARIOS:
            chaos_ticks = max(chaos_ticks, CALM_TICKS)
        self.spec = spec
        self.n = n
        self.chaos_ticks = chaos_ticks
        self.liveness_heights = liveness_heights
        self.max_steps = max_steps
        self._trace = trace
        self.plan = make_plan(random.Random(master.getrandbits(64)), n, spec, chaos_ticks, harsh, scenario)
        self.liveness_bound_ticks = liveness_bound_timeouts * self.plan.config.max_round_timeout_ticks
        self.rng = random.Random(master.getrandbits(64))
        self.now = 0
        self.stats = Stats()
        self.validators = [node_id(i) for i in range(n)]  # the genesis set
        self.genesis = sim_genesis(spec, self.validators, committee=valset)
        # Validator-set changes (`tests.sim.changes`): the spare node n, an observer at first, and the
        # schedule, drawn after everything else so that the rest of the seed is what it is without.
        self.valset_skipped = valset_refusal(self.genesis) if valset else ""
        changes = valset and not self.valset_skipped
        everyone = self.validators + ([node_id(n)] if changes else [])
        self.senders = {sender_key(s).address: s for s in range(SENDERS)}
        byzantine = dict(self.plan.byzantine)
        self.nodes: list[SimNode] = []
        for i, vid in enumerate(self.validators):
            node = SimNode(i, vid, f"n{i}", HmacSigner(vid), None, MemoryDisk(f"n{i}"), NodeMetrics(),
                           random.Random(master.getrandbits(64)))
            if i in byzantine and spec.adversary is not None:
                node.adversary = spec.adversary(AdversaryContext(
                    i, vid, node.signer, CHAIN_ID, everyone, random.Random(master.getrandbits(64)),
                    byzantine[i], self._status_of(node)))
            self.nodes.append(node)
        schedule: tuple[Change, ...] = ()
        if changes:
            faulty = frozenset(byzantine) | {c.node for c in self.plan.crashes if c.down_ticks is None} \
                | {d.node for d in self.plan.disk_faults}
            schedule = make_schedule(random.Random(master.getrandbits(64)), n, faulty, chaos_ticks,
                                     rotations=not rotation_refusal(self.genesis))
            self.nodes.append(SimNode(n, everyone[n], f"n{n}", HmacSigner(everyone[n]), None, MemoryDisk(f"n{n}"),
                                      NodeMetrics(), random.Random(master.getrandbits(64))))
        self.changes = Driver(CHAIN_ID, schedule, list(everyone), list(range(n))) if changes else None
        ids = everyone + [c.new_id for c in schedule if c.new_id]
        self.verifier = HmacVerifier(ids)
        self.by_id = {v: i for i, v in enumerate(everyone)}  # every id a node ever has -> the node
        self.by_id.update({c.new_id: c.node for c in schedule if c.new_id})
        # The set in force at each height, from the honest committed chain (index: height).
        self.sets: list[tuple[str, ...]] = [tuple(self.validators)] * (1 + ACTIVATION_DELAY)
        self.rotations: dict[int, tuple[int, str]] = {}  # node -> (activation height, its new id)
        self.decided: dict[int, tuple[str, str]] = {}  # height -> (block hash, first honest node)
        self.signed: dict[tuple[str, tuple[Any, ...]], str] = {}  # (node, slot) -> content
        self.network: list[tuple[int, float, int, int, int, bytes]] = []  # (due, order, seq, src, dst, data)
        self.seq = 0
        self.drop_p, self.dup_p, self.long_delay_p = self.plan.drop_p, self.plan.dup_p, self.plan.long_delay_p
        self.tx_p = self.plan.tx_p
        self.tx_count = 0
        self.next_nonce = [0] * SENDERS  # per sender: the first nonce no honest node has committed
        self.tx_arrivals: dict[int, list[tuple[int, Transaction]]] = {}
        self.restarts: dict[int, list[int]] = {}
        self.active_partitions: list[tuple[Partition, list[int]]] = []
        self.armed: list[Partition] = []  # isolate_decider partitions waiting for their decider
        self.healed = False
        self.heal_height = 0
        self.stalled = [-1] * SENDERS  # per sender: next_nonce at the last resubmission check
        self._sync_source = ""
        self.restart_heights: dict[int, int] = {}  # node -> its acknowledged height when it last restarted

    # --- running -----------------------------------------------------------------------------------

    def run(self) -> Stats:
        self.trace(f"plan: {self.plan.summary()}")
        for node in self.nodes:
            self._start(node)
        crashes = list(self.plan.crashes)
        partitions = list(self.plan.partitions)
        disk_faults = list(self.plan.disk_faults)
        while self.now < self.chaos_ticks:
            while crashes and crashes[0].at == self.now:
                self._schedule_crash(crashes.pop(0))
            while disk_faults and disk_faults[0].at == self.now:
                self._arm_disk_fault(disk_faults.pop(0))
            while partitions and partitions[0].start == self.now:
                self._start_partition(partitions.pop(0))
            self._end_partitions()
            self._tick()
        self._heal()
        start = self.now
        self.heal_height = max(n.height for n in self.nodes if n.honest)
        target = self.heal_height + self.liveness_heights
        while True:
            live = [n for n in self.nodes if n.honest and not n.down_forever]
            # Consensus decisions by a quorum of the set in force (deciding the next height).
            final = self.set_at(len(self.decided) + 1)
            voters = [n for n in live if n.id in final]
            quorum = min(len(final) - self.spec.max_faulty(len(final)), len(voters))
            behind = [n for n in live if n.height < target]
            deciding = [n for n in voters if n.decided_after_heal > 0]
            if not behind and len(deciding) >= quorum:
                break
            if self.now - start >= self.liveness_bound_ticks:
                lagging = ", ".join(f"{n.name} at {n.height}" for n in behind) or "none"
                decided = ", ".join(f"{n.name} {n.decided_after_heal}" for n in live)
                raise Violation("liveness", f"after healing at tick {start}, honest nodes did not reach "
                                f"height {target}, with {quorum} of them deciding a new height by consensus, "
                                f"within {self.liveness_bound_ticks} ticks (behind: {lagging}; new heights "
                                f"decided by consensus: {decided})")
            self._tick()
        self.stats.liveness_ticks = self.now - start
        self._check_chains()
        self._check_scenario()
        return self.stats

    def _tick(self) -> None:
        for index in self.restarts.pop(self.now, []):
            self._restart(self.nodes[index])
        network = self.network
        while network and network[0][0] <= self.now:
            _, _, _, src, dst, data = heapq.heappop(network)
            self._deliver(src, dst, data)
        for index, tx in self.tx_arrivals.pop(self.now, []):
            self._tx_arrives(self.nodes[index], tx)
        if self.rng.random() < self.tx_p:
            self._new_tx()
        if self.now % RESUBMIT_EVERY_TICKS == 0:
            self._resubmit()
        if self.now % SYNC_INTERVAL_TICKS == 0:
            self._sync()
        if self.changes is not None:
            self._drive_changes()
        order = list(range(len(self.nodes)))
        self.rng.shuffle(order)
        for index in order:
            node = self.nodes[index]
            if node.core is None:
                continue
            if node.adversary is not None:
                for peer, payload in node.adversary.spontaneous():
                    self._transmit(node.index, self.by_id[peer], payload)
            self._run(node)  # the core's tick is due: the clock moved on
        if self.changes is not None:
            self._check_engine_sets()
        self.now += 1

    def _clock(self) -> float:
        """The cores' clock: one unit per tick (exact in floats, unlike 0.05 steps)."""
        return float(self.now)

    def _clock_s(self) -> float:
        return self.now * TICK_MS / 1000

    def _clock_ms(self) -> int:
        return GENESIS_TIME_MS + self.now * TICK_MS

    def _run(self, node: SimNode) -> None:
        """Run the node's core until it has nothing to do; what it raises decides the node's fate."""
        core = node.core
        while core is not None and node.core is core:
            try:
                if not core.run_once():
                    return
            except SimCrash:
                self._crash(node, "halfway through an action list")
                return
            except Violation:
                raise
            except StorageError as exc:
                self._storage_failed(node, exc)
                return
            except Rejected as exc:
                if not node.honest:
                    self._halt(node, f"(Byzantine) cannot execute a committed block: {exc.message}")
                    return
                raise Violation("validity", f"honest {node.name} committed a block its own execution "
                                f"rejects: {exc.message}") from exc
            except Exception as exc:
                self.trace(traceback.format_exc())
                raise Violation("engine_raised", f"{node.name} raised {exc!r}") from exc
            self.stats.steps += 1
            if self.stats.steps > self.max_steps:
                raise Violation("budget", f"more than {self.max_steps} core steps: a message storm?")

    # --- validator-set changes (see tests.sim.changes) ----------------------------------------------

    def set_at(self, height: int) -> Sequence[str]:
        """The set in force at `height` as the honest committed chain fixes it (above the heights it
        fixes so far: the last one it fixes)."""
        sets = self.sets
        return sets[height] if 0 <= height < len(sets) else sets[-1]

    def _drive_changes(self) -> None:
        assert self.changes is not None
        tx = self.changes.due(self.now)
        if tx is not None:
            change = self.changes.change
            assert change is not None
            what = type(tx.payload).__name__.lower()
            self.trace(f"COMMITTEE offers {what} of step {self.changes.step}: {change.action} n{change.node}")
            self._offer(tx)
        for index, (effective, _) in sorted(self.rotations.items()):
            node = self.nodes[index]
            if node.core is not None and not node.down_forever and node.height >= effective - 1:
                # The operator restarts the node with its new key as its chain reaches the change.
                self._power_loss(node)
                self.trace(f"STOP {node.name} to restart it with its new key")
                self._restart(node)

    def _check_engine_sets(self) -> None:
        """valset: every honest engine works on its height with the set the chain put in force there
        (its size, whether this node has a seat, and a proposer from it)."""
        for node in self.nodes:
            if node.core is None or not node.honest:
                continue
            status = node.core.engine.status()
            height = status.get("height")
            if not isinstance(height, int) or "validators" not in status or height >= len(self.sets):
                continue
            in_force = self.set_at(height)
            proposer = status.get("proposer")
            if status["validators"] != len(in_force) or status.get("is_validator") != (node.id in in_force) \
                    or (proposer is not None and proposer not in in_force):
                raise Violation("valset", f"{node.name}'s engine works on height {height} with {status['validators']} "
                                f"validators (a seat: {status.get('is_validator')}, proposer "
                                f"{str(proposer)[:8]}), but the chain put {len(in_force)} in force there "
                                f"(a seat: {node.id in in_force})")

    def _take_new_key(self, node: SimNode) -> None:
        rotation = self.rotations.get(node.index)
        if rotation is not None and node.height >= rotation[0] - 1:
            del self.rotations[node.index]
            node.id, node.signer = rotation[1], HmacSigner(rotation[1])
            self.trace(f"{node.name} takes its new key {node.id[:8]} (in force from height {rotation[0]})")

    def _follow_changes(self, node: SimNode, block: Block, store: Store) -> None:
        """The honest chain decided `block`: read the set of height + ACTIVATION_DELAY from the committed
        state of the node that decided it first, and check it against the committee's schedule."""
        driver = self.changes
        assert driver is not None and len(self.sets) == block.height + ACTIVATION_DELAY
        height = block.height
        faults, node.disk.faults = node.disk.faults, DiskFaults()  # the simulator's own read
        try:
            upcoming = tuple(ValidatorSets(store, self.genesis).at(height + ACTIVATION_DELAY))
        finally:
            node.disk.faults = faults
        self.sets.append(upcoming)
        decided = driver.committed(height, {tx.hash for tx in block.txs})
        if decided is not None:
            if upcoming != driver.expected():
                raise Violation("valset", f"block {height} decided {decided.action} of n{decided.node}, but the "
                                f"set of height {driver.effective} is {[v[:8] for v in upcoming]}, not "
                                f"{[v[:8] for v in driver.expected()]}")
            if decided.new_id:
                self.rotations[decided.node] = (driver.effective, decided.new_id)
            self.trace(f"CHANGE decided in block {height}: {decided.action} n{decided.node}, in force from "
                       f"height {driver.effective} (n={len(upcoming)})")
        elif upcoming != self.sets[-2]:
            raise Violation("valset", f"the set changed at height {height + ACTIVATION_DELAY} without a change "
                            f"decided in block {height}")
        if driver.phase == "force" and height >= driver.effective:
            driver.in_force(self.now)

    # --- the network -------------------------------------------------------------------------------

    def _send(self, node: SimNode, to: str | None, data: bytes) -> None:
        if node.honest:
            info = self.spec.describe(data, self.set_at)
            if info is not None and info.slot is not None and info.author == node.id:
                key = (node.id, info.slot)
                before = self.signed.setdefault(key, info.content)
                if before != info.content:
                    raise Violation("equivocation", f"honest {node.name} signed two different messages for "
                                    f"{info.slot}: {before} and {info.content}")
        if node.adversary is not None:
            pairs = node.adversary.outgoing(to, data)
        elif to is None:
            pairs = [(other.id, data) for other in self.nodes if other is not node]
        else:
            pairs = [(to, data)]
        for dst, payload in pairs:
            if dst in self.by_id:
                self._transmit(node.index, self.by_id[dst], payload)

    def _transmit(self, src: int, dst: int, data: bytes) -> None:
        rng = self.rng
        if rng.random() < self.drop_p:
            self.stats.dropped_by_network += 1
            return
        copies = 2 if rng.random() < self.dup_p else 1
        for _ in range(copies):
            delay = rng.randint(1, self.plan.delay_max)
            if rng.random() < self.long_delay_p:
                delay += rng.randint(1, 6 * self.plan.config.round_timeout_ticks)
            self.seq += 1
            heapq.heappush(self.network, (self.now + delay, rng.random(), self.seq, src, dst, data))

    def _deliver(self, src: int, dst: int, data: bytes) -> None:
        node = self.nodes[dst]
        if node.core is None or not self._connected(src, dst):
            self.stats.dropped_by_network += 1
            return
        self.stats.deliveries += 1
        if self._trace is not None:
            info = self.spec.describe(data, self.set_at)
            what = info.text if info is not None else f"<{len(data)} undecodable bytes>"
            if info is not None and info.author and info.author != self.nodes[src].id:
                what += f" (signed as n{self.by_id.get(info.author, '?')})"
            self.trace(f"n{src} -> {node.name}  {what}")
        if node.adversary is not None:
            for peer, payload in node.adversary.received(data):
                self._transmit(node.index, self.by_id[peer], payload)
        node.core.post_received(self.nodes[src].id, data)
        self._run(node)

    def _connected(self, a: int, b: int) -> bool:
        for partition, side in self.active_partitions:
            if partition.kind == "flapping" and ((self.now - partition.start) // partition.flap_ticks) % 2:
                continue
            if (a in side) != (b in side):
                return False
        return True

    def _start_partition(self, partition: Partition) -> None:
        n = len(self.nodes)
        if partition.kind == "isolate_decider":
            self.armed.append(partition)  # cuts off the next node that decides, see _commit
            return
        if partition.kind == "isolate_proposer":
            proposer = None
            for node in self.nodes:
                if node.engine is not None and node.honest:
                    proposer = node.engine.status().get("proposer") or node.engine.status().get("leader")
                    break
            side = [self.by_id[proposer]] if proposer in self.by_id else [self.rng.randrange(n)]
        elif partition.kind == "isolate_one":
            side = [self.rng.randrange(n)]
        elif partition.kind == "minority":
            side = self.rng.sample(range(n), self.rng.randint(1, max(1, n // 2)))
        else:
            side = self.rng.sample(range(n), n // 2)
        side.sort()
        self.active_partitions.append((partition, side))
        names = ", ".join(f"n{i}" for i in side)
        self.trace(f"PARTITION {partition.kind} until {partition.end}: {{{names}}} cut off from the rest")

    def _end_partitions(self) -> None:
        keep = [(p, s) for p, s in self.active_partitions if p.end > self.now]
        if len(keep) != len(self.active_partitions):
            self.trace("PARTITION ends")
        self.active_partitions = keep
        self.armed = [p for p in self.armed if p.end > self.now]

    # --- the workload ------------------------------------------------------------------------------

    def _new_tx(self) -> None:
        tx = sim_tx(self.tx_count)
        self.tx_count += 1
        self._offer(tx)

    def _offer(self, tx: Transaction) -> None:
        for node in self.nodes:
            # This tick's arrivals were delivered already: a draw of 0 arrives on the next tick
            # (filed under this tick it would never arrive, stalling its sender's later nonces).
            due = max(self.now + 1, self.now + self.rng.randint(0, self.plan.delay_max))
            self.tx_arrivals.setdefault(due, []).append((node.index, tx))

    def _resubmit(self) -> None:
        """A client sends again the oldest uncommitted transactions of a sender whose chain of nonces has
        not moved since the last check: mempools are lost in crashes and refuse what they cannot hold,
        and one lost nonce stalls every later transaction of its sender."""
        for sender in range(SENDERS):
            first = self.next_nonce[sender]
            if first != self.stalled[sender]:
                self.stalled[sender] = first  # it moved since the last check: not stalled (yet)
                continue
            for nonce in range(first, first + RESUBMIT_PER_SENDER):
                number = nonce * SENDERS + sender
                if number >= self.tx_count:
                    break
                self._offer(sim_tx(number))

    def _tx_arrives(self, node: SimNode, tx: Transaction) -> None:
        if node.core is None:
            return
        node.core.post_submit([tx], None, Box())
        self._run(node)

    def _verify(self, tx: Transaction) -> bool:
        return signature_valid(tx)

    # --- commits -----------------------------------------------------------------------------------

    def _on_commit(self, node: SimNode, committed: CommittedBlock) -> None:
        """The node's listener: the commit is acknowledged (its batch is durable)."""
        if node.disk_error is not None:
            raise Violation("halt", f"{node.name} acknowledged block {committed.block.height} after a failed "
                            f"disk operation ({node.disk_error})")
        how = f"synced from {self._sync_source}" if committed.synced else "consensus"
        assert node.core is not None
        self._record_commit(node, committed.block, committed.certificate, how, committed.synced, node.core.store)

    def _record_commit(self, node: SimNode, block: Block, certificate: dict[str, Any], how: str,
                       synced: bool, store: Store) -> None:
        height = block.height
        # Under the set in force at the block's height (from the honest chain; a Byzantine node may
        # be ahead of what the honest chain has fixed, and is then judged by its agreement only).
        if (node.honest or height < len(self.sets)) \
                and not self.spec.verify_certificate(block, certificate, self.set_at(height), self.verifier):
            raise Violation("certificate", f"{node.name} committed block {height} {block.hash[:8]} with a "
                            f"certificate not valid under the {len(self.set_at(height))} validators in force "
                            f"at its height: {certificate}")
        last_hash = node.chain[-1][0].hash if node.chain else self.genesis.hash()
        if height != node.height + 1 or block.header.prev_hash != last_hash:
            raise Violation("continuity", f"{node.name} committed {block.hash[:8]} at height {height} on top "
                            f"of its block {node.height} {last_hash[:8]}: a committed block would change")
        if node.honest:
            first = self.decided.setdefault(height, (block.hash, node.name))
            if first[0] != block.hash:
                raise Violation("agreement", f"at height {height} honest {first[1]} committed {first[0][:8]} "
                                f"but honest {node.name} committed {block.hash[:8]}")
            if first[1] == node.name:
                if self.changes is not None:
                    self._follow_changes(node, block, store)
                for tx in block.txs:
                    sender = self.senders.get(tx.sender)
                    if sender is not None:
                        self.next_nonce[sender] = max(self.next_nonce[sender], tx.nonce + 1)
            if block.header.app_hash == POISON_APP_HASH:
                raise Violation("validity", f"honest {node.name} committed a block its checker rejects")
            if self.spec.checker_once and node.checker is not None and node.checker.repeated is not None:
                raise Violation("checker_once", f"{node.name} asked its BlockChecker more than once about "
                                f"block {node.checker.repeated[:8]}")
        node.chain.append((block, certificate))
        self.stats.commits += 1
        if synced:
            node.synced_commits += 1
            self.stats.synced_commits += 1
        else:
            node.consensus_commits += 1
            self.stats.consensus_commits += 1
            if self.healed and height > self.heal_height:
                node.decided_after_heal += 1
        if self.armed and not synced and node.honest:
            armed = self.armed.pop(0)
            self.active_partitions.append((armed, [node.index]))
            self.trace(f"PARTITION isolate_decider until {armed.end}: {node.name} cut off right after "
                       f"deciding")
        self.trace(f"{node.name} COMMITS h={height} {block.hash[:8]} ({how}, "
                   f"round {certificate.get('round')}, {len(block.txs)} txs)")

    def _sync(self) -> None:
        """Block sync as the daemon does it: load certified blocks from a peer that is ahead, check
        their certificates and signatures, and post them to the node's core."""
        for node in self.nodes:
            if node.core is None:
                continue
            ahead = [p for p in self.nodes if p.core is not None and p.height > node.height
                     and self._connected(p.index, node.index)]
            if not ahead:
                continue
            peer = self.rng.choice(ahead)
            blocks = self._fetch(peer, node, node.height + 1)
            if not blocks or node.core is None:
                continue
            reply: Box[Any] = Box()
            self._sync_source = peer.name
            node.core.post_synced(blocks, reply)
            self._run(node)
            self._sync_source = ""
            if reply.answered and reply.result.error is not None:
                self.trace(f"{node.name} refused synced blocks from {peer.name}: {reply.result.error}")

    def _fetch(self, peer: SimNode, node: SimNode, start: int) -> list[tuple[Block, dict[str, Any]]]:
        """Certified blocks from `peer`'s store for `node`, checked as the node's syncer checks them:
        each certificate under the set `node` knows for its height; above the heights its committed
        state fixes, under the last set it knows, and the batch ends at the first block that fails
        there (its core checks the rest again, see `_start`)."""
        assert peer.core is not None
        store = peer.core.store
        out: list[tuple[Block, dict[str, Any]]] = []
        sets = self._sets_for_sync(node, start)
        if sets is None:
            return []
        known, guess = sets
        try:
            for height in range(start, min(peer.height, start + SYNC_BATCH - 1) + 1):
                block = store.load_block(height)
                certificate = store.load_certificate(height)
                if block is None or certificate is None:
                    raise Violation("durability", f"{peer.name} acknowledged block {height} but its store "
                                    f"does not have it")
                signers = known.get(height, guess)
                if not self.spec.verify_certificate(block, certificate, signers, self.verifier) \
                        or not all(self._verify(tx) for tx in block.txs):
                    if height in known:
                        self.trace(f"block {height} from {peer.name} fails verification: not synced")
                    break
                out.append((block, certificate))
        except StorageError as exc:
            self._storage_failed(peer, exc)
            return []
        return out

    def _sets_for_sync(self, node: SimNode, start: int) -> tuple[dict[int, Sequence[str]], Sequence[str]] | None:
        """The sets `node` knows for the heights from `start` on (its committed state fixes them up to
        its head + ACTIVATION_DELAY), and the last of them, its guess for the heights above; None
        when reading its state failed (it halts)."""
        sets = node.valsets
        if sets is None:  # a chain without a committee: the genesis set at every height
            return {h: self.validators for h in range(start, start + SYNC_BATCH)}, self.validators
        try:
            through = sets.known_through()
            known: dict[int, Sequence[str]] = {h: sets.at(h) for h in range(start, through + 1)}
            return known, sets.at(through)
        except StorageError as exc:
            self._storage_failed(node, exc)
            return None

    # --- crashes, restarts and disk faults ---------------------------------------------------------

    def _status_of(self, node: SimNode) -> Callable[[], dict[str, Any]]:
        return lambda: node.core.engine.status() if node.core is not None else {}

    def _open_store(self, node: SimNode) -> Store:
        backend: KeyValueStore = MemoryBackend(node.disk)
        if self.spec.store_backend is not None:
            backend = self.spec.store_backend(backend)
        node.backend = SimBackend(backend, node)
        return Store(node.backend, self.genesis)

    def _start(self, node: SimNode) -> None:
        """Build the node from its disk, as the daemon does: store, mempool, executor, engine, core."""
        try:
            store = self._open_store(node)
            self._check_acknowledged(node, store)
            restored = store.load_engine()
            # The set of each height from committed state, as the daemon reads it; only on a chain with
            # a committee (without one the set is the genesis set at every height, and the simulation
            # of such chains reads nothing more than it always did).
            sets = self._valsets_of(node, store) if self.changes is not None else None
            n_next = len(sets.at(store.tip.height + 1)) if sets is not None else self.n
            # What the daemon hands its engine: the proposers of the last blocks in the store.
            schedule = self.spec.schedule
            recent = recent_proposers(store, schedule.window_blocks(n_next) if schedule is not None else 0)
        except StorageError as exc:
            if node.disk_error is None:
                raise Violation("durability", f"{node.name} cannot reopen its store: {exc}") from exc
            self._power_loss(node)
            self._halted_for_good(node, f"its store failed while starting: {exc}")
            return
        mempool = Mempool(store, CHAIN_ID, MempoolLimits(max_txs=MAX_MEMPOOL, tx_ttl_s=1e9), self._clock_s,
                          self._verify)
        at = sets.at if sets is not None else None
        executor = BlockExecutor(store, mempool, node.id, self.genesis.validator_ids,
                                 BuildLimits(MAX_TXS_PER_BLOCK, 1 << 22, 10_000,
                                             self.spec.empty_block_after_round_0), self._clock_ms, validators_at=at)
        checker = CountingChecker(executor, store, node.name)
        ctx = EngineContext(CHAIN_ID, self.validators, node.signer, self.verifier, checker, store.tip,
                            node.rng, restored, self.plan.config, recent_proposers=recent, validators_at=at)
        try:
            # As the daemon: both engines have a passive seat, so a node outside the set runs the same
            # engine, follows, and takes up its vote at the height its key enters the set.
            engine = self.spec.make(ctx)
        except StorageError as exc:  # reading the set of its next height failed
            if node.disk_error is None:
                raise Violation("storage", f"{node.name}'s engine could not start: {exc}") from exc
            self._power_loss(node)
            self._halted_for_good(node, f"its store failed while starting: {exc}")
            return
        except Exception as exc:
            self.trace(traceback.format_exc())
            raise Violation("engine_raised", f"{node.name} failed to start from its disk: {exc!r}") from exc
        settings = CoreSettings(tick_s=1.0, max_inbox=MAX_INBOX, full_block_txs=MAX_TXS_PER_BLOCK)
        node.checker = checker
        node.valsets = sets
        node.core = self.spec.core(engine, store, executor, mempool, node.metrics, settings, clock=self._clock,
                                   listener=SimListener(node, self._on_commit),
                                   transport=SimTransport(node, self._send))
        if sets is not None:
            node.core.synced_check = self._synced_check(sets)
        node.core.start_clock()

    def _valsets_of(self, node: SimNode, store: Store) -> ValidatorSets:
        """The node's reader of the set of each height (a broken one for one node in bite tests)."""
        odd = self.spec.odd_valsets
        if odd is not None and node.index == min(n.index for n in self.nodes if n.honest):
            return odd(store, self.genesis)
        return ValidatorSets(store, self.genesis)

    def _synced_check(self, sets: ValidatorSets) -> Callable[[Block, dict[str, Any]], str | None]:
        """The daemon's last check of a synced block, in the core, once the state before it is
        committed: its certificate under the set in force at its height."""
        def check(block: Block, certificate: dict[str, Any]) -> str | None:
            expected = sets.at(block.height)
            if self.spec.verify_certificate(block, certificate, expected, self.verifier):
                return None
            return f"its certificate is not valid under the {len(expected)} validators in force at its height"
        return check

    def _check_acknowledged(self, node: SimNode, store: Store) -> None:
        """Durability: every block the node acknowledged is in its reopened store, unchanged."""
        if store.tip.height < node.height:
            raise Violation("durability", f"{node.name} acknowledged block {node.height} but after the crash "
                            f"its store ends at {store.tip.height}")
        for height, (block, _) in enumerate(node.chain, 1):
            if store.load_block_bytes(height) != block.encode():
                raise Violation("durability", f"{node.name}'s acknowledged block {height} changed in its store "
                                f"after the crash")
        for height in range(node.height + 1, store.tip.height + 1):
            # Stored but never acknowledged (the crash came between the write and the listener).
            block, certificate = store.load_block(height), store.load_certificate(height)
            if block is None or certificate is None:
                raise Violation("durability", f"{node.name}'s store misses block {height} below its head")
            self._record_commit(node, block, certificate, "found in its store after a restart", False, store)

    def _schedule_crash(self, crash: Crash) -> None:
        node = self.nodes[crash.node]
        if node.core is None:
            return
        node.pending_down_ticks = crash.down_ticks
        node.down_forever = crash.down_ticks is None
        if crash.mid_step:
            node.crash_countdown = self.rng.randint(0, 2)
        else:
            self._crash(node, "between steps")

    def _arm_disk_fault(self, fault: DiskFault) -> None:
        node = self.nodes[fault.node]
        if node.down_forever:
            return
        faults = node.disk.faults
        if fault.kind == "write":
            faults.fail_writes = 1
        elif fault.kind == "sync":
            faults.fail_syncs = 1
        else:
            faults.failing_read_prefixes.add(fault.prefix)
        self.trace(f"DISK FAULT armed on {node.name}: its next {fault.kind}"
                   + (f" under {fault.prefix!r}" if fault.prefix else "") + " fails")

    def _power_loss(self, node: SimNode) -> None:
        """The node's process and its disk's unsynced records go; a seeded prefix of them survives."""
        self._collect_counters(node)
        node.core = None
        node.checker = None
        node.backend = None
        node.crash_countdown = None
        node.disk.crash(self.rng.randint(0, node.disk.unsynced_records))

    def _crash(self, node: SimNode, how: str) -> None:
        self._power_loss(node)
        if node.pending_down_ticks is not None:
            self.restarts.setdefault(self.now + node.pending_down_ticks, []).append(node.index)
        self.trace(f"CRASH {node.name} {how}" + (" (for good)" if node.down_forever else ""))

    def _restart(self, node: SimNode) -> None:
        if node.core is not None or node.down_forever:
            return
        self._take_new_key(node)
        self._start(node)
        if node.core is not None:
            self.restart_heights[node.index] = node.height
            self.trace(f"RESTART {node.name} at height {node.height}")

    def _storage_failed(self, node: SimNode, exc: StorageError) -> None:
        """The core (or block sync serving from the node) raised StorageError."""
        if node.disk_error is None:
            # Store refused something itself (a block that does not extend its head, an execution
            # that does not match): the node's decisions broke an invariant.
            if not node.honest:
                self._halt(node, f"(Byzantine) its store refused a write: {exc}")
                return
            kind = "continuity" if "does not extend" in str(exc) or "chain ends at" in str(exc) else "storage"
            raise Violation(kind, f"{node.name}'s store refused a write: {exc}")
        self._halt(node, str(exc))

    def _halt(self, node: SimNode, why: str) -> None:
        """A node halts on a failed disk operation. After a failed write its store must not have moved
        past what it acknowledged; a failed read may come between a block's durable write and its
        acknowledgement (the mempool reads state after the commit), so one block more is allowed."""
        assert node.core is not None
        head = node.core.store.tip.height
        if head < node.height or head > node.height + (0 if node.disk_write_failed else 1):
            raise Violation("halt", f"{node.name}'s store head is {head}, its acknowledged height "
                            f"{node.height}, after its disk failed ({node.disk_error})")
        self._power_loss(node)
        self._halted_for_good(node, why)

    def _halted_for_good(self, node: SimNode, why: str) -> None:
        node.core = None
        node.down_forever = True
        node.halted = why
        self.stats.halts += 1
        self.trace(f"HALT {node.name} (for good): {why}")
        # What the disk still holds after the power loss: nothing acknowledged may be missing.
        node.disk.faults = DiskFaults()
        node.disk_error = None
        node.disk_write_failed = False
        after = Store(MemoryBackend(node.disk), self.genesis)
        try:
            self._check_acknowledged(node, after)
        finally:
            after.close()
        node.disk_error = why  # anything the node did from now on would be a violation

    def _heal(self) -> None:
        self.healed = True
        self.active_partitions = []
        self.armed = []
        self.drop_p = self.dup_p = self.long_delay_p = 0.0
        self.tx_p = max(self.tx_p, 0.3)
        self.restarts.clear()
        for node in self.nodes:
            node.crash_countdown = None
            if node.core is not None:
                if node.halted is None:
                    node.down_forever = False  # its crash was still pending: it stays up
            elif not node.down_forever:
                self._restart(node)
        self.trace(f"HEAL: network repaired, crashed nodes restarted; liveness phase, up to "
                   f"{self.liveness_bound_ticks} ticks for {self.liveness_heights} more blocks")

    def _check_chains(self) -> None:
        """At the end: honest chains are the decided one, and the app state agrees byte for byte
        between honest nodes at the same height (whatever way each got there)."""
        states: dict[int, tuple[str, str]] = {}  # height -> (state digest, node)
        for node in self.nodes:
            if not node.honest:
                continue
            for block, _ in node.chain:
                if self.decided[block.height][0] != block.hash:
                    raise Violation("agreement", f"{node.name}'s block {block.height} differs from the "
                                    f"decided one")
            if node.core is None:
                continue
            store = node.core.store
            if store.tip.height != node.height:
                raise Violation("durability", f"{node.name}'s store head {store.tip.height} is not its "
                                f"acknowledged height {node.height}")
            assert node.backend is not None
            digest = state_digest(node.backend)
            first = states.setdefault(node.height, (digest, node.name))
            if first[0] != digest:
                raise Violation("app_hash", f"at height {node.height} {first[1]} and {node.name} hold "
                                f"different states")

    def _check_scenario(self) -> None:
        if self.scenario not in CALM_SCENARIOS:
            return
        (crash,) = self.plan.crashes
        victim = self.nodes[crash.node]
        best = max((n for n in self.nodes if n.honest and n is not victim), key=lambda n: n.height)
        chain, height = best.chain, best.height
        if self.scenario == "one-down":
            changed = [b.height for b, cert in chain if cert.get("round") != 0]
            if len(changed) > MAX_ROUND_CHANGE_SHARE * height:
                raise Violation("round_changes", f"with {victim.name} down, {len(changed)} of {height} "
                                f"heights needed a round change (at most {MAX_ROUND_CHANGE_SHARE:.0%} allowed)")
            return
        back = self.restart_heights.get(victim.index, height)
        if not any(b.header.proposer == victim.id for b, _ in chain[back:]):
            raise Violation("rejoin", f"{victim.name}, restarted at height {back}, proposed none of the "
                            f"{height - back} blocks committed since")

    def _collect_counters(self, node: SimNode) -> None:
        if node.core is not None and node.honest:
            for name, value in node.core.engine.counters.items():
                self.stats.counters[name] = self.stats.counters.get(name, 0) + value

    def finish(self) -> None:
        """Fold the counters of the engines still running into the stats."""
        for node in self.nodes:
            self._collect_counters(node)

    def trace(self, line: str) -> None:
        if self._trace is not None:
            self._trace(f"t={self.now:5d}  {line}")


def valset_refusal(genesis: Genesis) -> str:
    """Why the chain refuses validator-set changes (its own rule, asked of its genesis state), or ""."""
    store = Store(MemoryBackend(MemoryDisk("probe")), genesis)
    try:
        governance.ACTIONS["add-validator"].check(StateOverlay(store.state, genesis.chain_id),
                                                  {"node_id": node_id(1 << 20), "p2p_url": "ws://127.0.0.1:1"})
    except Rejected as exc:
        return exc.message
    finally:
        store.close()
    return ""


def rotation_refusal(genesis: Genesis) -> str:
    """Why the chain refuses a one-step key rotation (Raft: single-server changes only), or ""."""
    store = Store(MemoryBackend(MemoryDisk("probe")), genesis)
    new = keys.PrivateKey.from_seed(hashlib.sha256(b"ledgerd-sim-rotation-probe").digest())
    old = genesis.validator_ids[0]
    proof = new.sign(valset.rotation_message(genesis.chain_id, old, new.address)).hex()
    try:
        governance.ACTIONS["rotate-validator-key"].check(StateOverlay(store.state, genesis.chain_id),
                                                         {"node_id": old, "new_node_id": new.address, "proof": proof})
    except Rejected as exc:
        return exc.message
    finally:
        store.close()
    return ""


def state_digest(backend: KeyValueStore) -> str:
    """A digest of the committed state: every key and value `Store` keeps under its state namespace."""
    digest = hashlib.sha256()
    for key, value in backend.scan(STATE, prefix_stop(STATE)):
        digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return digest.hexdigest()
