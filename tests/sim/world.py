"""One simulated cluster: nodes, their disks, a faulty network, a workload, and the checkers.

Time is a tick counter. Per tick: scheduled faults fire, every message due is delivered (each
delivery is one `Received` step of the destination's engine), new transactions reach mempools,
lagging nodes sync blocks from a peer, and every live node gets a `Tick`. All randomness comes from
`random.Random` instances derived from the seed, and nothing iterates a set or dict whose order
could differ between processes, so a seed replays exactly.

A node models the runtime of `node/`: it executes its engine's actions in order. `Persist` writes
its "disk" (a dict that survives crashes), `Commit` appends to its chain (also durable),
`Send`/`Broadcast` go to the network, `BuildProposal` is answered from its mempool. A crash throws
the engine and mempool away, possibly halfway through an action list; a restart builds a new
engine from the disk and the chain tip, as the daemon does.

Faults, drawn per seed by `make_plan`: delays, drops, duplicates and reordering; partitions (an
isolated proposer, the next node to decide cut off right after deciding, single nodes, 2-2 or
3-4 splits, minorities, flapping links); crash-restarts, between steps or halfway through an
action list; and up to f Byzantine validators (see `byzantine`). Block sync is modelled too: every
few ticks a node that is behind a reachable peer copies its certified blocks, as the daemon does.

Checkers run incrementally, the moment something happens, inside the delivery or tick that caused
it (which is stronger than checking after each delivery). On every commit:
    agreement   no two honest nodes commit different blocks at one height
    continuity  a node's next block extends its own last block: committed blocks never change
    certificate every committed block carries a certificate the engine's verifier accepts
    validity    no honest node commits a block its BlockChecker rejects (a "poisoned" block)
and on every message an honest node sends:
    no equivocation  an honest node never signs two different contents for one slot
plus: an engine never raises on any input, calls the BlockChecker at most once per block
(when the engine promises that), and the run stays within its step budget.

Scenarios (`scenario`, default "mixed", the random mix above). "down" and "down-restart" add to
that mix one honest validator that crashes early for good, or for a long time and then restarts
(the Byzantine and crash budgets shrink to keep at most f faulty). The calm ones have no faults but
message delays and one validator down from the start, and run `CALM_TICKS`: "one-down" checks
    round_changes  at most `MAX_ROUND_CHANGE_SHARE` of the heights needed a round change (with a
                   plain rotation a crashed validator of n costs one height in n)
and "one-back", whose validator restarts at `CALM_RESTART_AT`, checks
    rejoin         the restarted validator proposes a committed block again.

Then the liveness phase: partitions heal, drops stop, crashed nodes restart (except those
crashed for good, so that at most f nodes remain faulty counting the Byzantine ones), and every
live honest node must commit `liveness_heights` blocks beyond the best honest height at the heal
within `liveness_bound_timeouts` times the seed's largest round timeout.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from consensus.api import (
    Action,
    Broadcast,
    BuildProposal,
    ChainAdvanced,
    ChainTip,
    Commit,
    Engine,
    EngineConfig,
    EngineContext,
    Event,
    Persist,
    ProposalBuilt,
    Received,
    Send,
    Tick,
    TxsAvailable,
)
from ledger import keys
from ledger.block import Block, make_block
from ledger.tx import Record, Transaction, sign_tx
from tests.sim.byzantine import POISON_APP_HASH, AdversaryContext
from tests.sim.crypto import HmacSigner, HmacVerifier, node_id
from tests.sim.engines import Adversary, EngineSpec

CHAIN_ID = "sim-chain"
TICK_MS = 50
GENESIS_TIME_MS = 1_700_000_000_000
GENESIS_HASH = hashlib.sha256(b"ledgerd-sim-genesis").hexdigest()
GENESIS_APP_HASH = hashlib.sha256(b"ledgerd-sim-genesis-state").hexdigest()
SYNC_INTERVAL_TICKS = 10
SYNC_BATCH = 8
MAX_TXS_PER_BLOCK = 3
MAX_MEMPOOL = 64
PARTITION_KINDS = ("isolate_proposer", "isolate_decider", "isolate_one", "split", "flapping", "minority")
SCENARIOS = ("mixed", "down", "down-restart", "one-down", "one-back")
CALM_SCENARIOS = ("one-down", "one-back")
CALM_TICKS = 4000
CALM_RESTART_AT = 600
MAX_ROUND_CHANGE_SHARE = 0.1


class Violation(Exception):
    """A checker failed: `kind` is the checker's name, the message says what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


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

    def summary(self) -> str:
        byz = ", ".join(f"n{i}: {'+'.join(sorted(b))}" for i, b in self.byzantine) or "none"
        parts = ", ".join(f"{p.kind} [{p.start},{p.end})" for p in self.partitions) or "none"
        crashes = ", ".join(
            f"n{c.node}@{c.at}" + ("(mid-step)" if c.mid_step else "")
            + ("forever" if c.down_ticks is None else f"+{c.down_ticks}") for c in self.crashes) or "none"
        c = self.config
        return (f"timeouts {c.round_timeout_ticks}..{c.max_round_timeout_ticks} ticks; "
                f"delay 1..{self.delay_max}; drop {self.drop_p}; dup {self.dup_p}; "
                f"long delays {self.long_delay_p}; tx rate {self.tx_p}\n"
                f"  partitions: {parts}\n  crashes: {crashes}\n  byzantine: {byz}")


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
    if one_down:
        victim = rng.choice(honest)
        crashes = [c for c in crashes if c.node != victim]
        at = rng.randrange(max(1, chaos_ticks // 4))
        down = None if scenario == "down" else rng.randint(chaos_ticks // 4, chaos_ticks // 2)
        crashes.append(Crash(victim, at, down, rng.random() < 0.5))
    return FaultPlan(
        config=config,
        delay_max=rng.choice((1, 2, 4, 8)),
        drop_p=rng.choice((0.02, 0.1) if harsh else (0.0, 0.0, 0.02, 0.1, 0.25)),
        dup_p=rng.choice((0.0, 0.02, 0.1)),
        long_delay_p=rng.choice((0.05, 0.1) if harsh else (0.0, 0.0, 0.01, 0.05)),
        tx_p=rng.choice((0.05, 0.2, 0.5)),
        partitions=tuple(sorted(partitions, key=lambda p: p.start)),
        crashes=tuple(sorted(crashes, key=lambda c: c.at)),
        byzantine=tuple(byzantine),
    )


@lru_cache(maxsize=1)
def _tx_key() -> keys.PrivateKey:
    return keys.PrivateKey.from_seed(b"ledgerd-sim-transactions-key-32b")


@lru_cache(maxsize=4096)
def sim_tx(number: int) -> Transaction:
    """The simulator's `number`-th transaction: a real, signed notarization record."""
    digest = hashlib.sha256(b"%d" % number).hexdigest()
    return sign_tx(_tx_key(), CHAIN_ID, number, Record(f"doc-{number}", digest))


class SimChecker:
    """Accepts every block except poisoned ones, and remembers how often each block was checked."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.repeated: str | None = None  # a block hash checked more than once

    def check_block(self, block: Block, parent: ChainTip) -> str | None:
        self.calls[block.hash] = self.calls.get(block.hash, 0) + 1
        if self.calls[block.hash] > 1:
            self.repeated = block.hash
        if block.header.app_hash == POISON_APP_HASH:
            return "poisoned: the state transition is invalid"
        return None


@dataclass
class SimNode:
    index: int
    id: str
    name: str
    signer: HmacSigner
    adversary: Adversary | None
    disk: dict[str, bytes] = field(default_factory=dict)
    chain: list[tuple[Block, dict[str, Any]]] = field(default_factory=list)
    engine: Engine | None = None
    checker: SimChecker = field(default_factory=SimChecker)
    mempool: dict[str, Transaction] = field(default_factory=dict)
    committed_txs: set[str] = field(default_factory=set)
    crash_after_actions: int | None = None  # a pending mid-step crash
    pending_down_ticks: int | None = None
    down_forever: bool = False
    rng: random.Random = field(default_factory=random.Random)

    @property
    def honest(self) -> bool:
        return self.adversary is None

    def tip(self) -> ChainTip:
        if not self.chain:
            return ChainTip(0, GENESIS_HASH, GENESIS_TIME_MS, GENESIS_APP_HASH)
        block = self.chain[-1][0]
        return ChainTip(block.height, block.hash, block.header.timestamp, block.header.app_hash)


@dataclass
class Stats:
    deliveries: int = 0
    steps: int = 0
    commits: int = 0
    dropped_by_network: int = 0
    liveness_ticks: int | None = None
    counters: dict[str, int] = field(default_factory=dict)  # honest engines' counters, summed


class World:
    def __init__(self, spec: EngineSpec, n: int, seed: int, chaos_ticks: int, liveness_heights: int,
                 liveness_bound_timeouts: int, max_steps: int, trace: Callable[[str], None] | None = None,
                 harsh: bool = False, scenario: str = "mixed") -> None:
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
        self.validators = [node_id(i) for i in range(n)]
        self.verifier = HmacVerifier(self.validators)
        self.by_id = {v: i for i, v in enumerate(self.validators)}
        byzantine = dict(self.plan.byzantine)
        self.nodes: list[SimNode] = []
        for i, vid in enumerate(self.validators):
            node = SimNode(i, vid, f"n{i}", HmacSigner(vid), None, rng=random.Random(master.getrandbits(64)))
            if i in byzantine and spec.adversary is not None:
                node.adversary = spec.adversary(AdversaryContext(
                    i, vid, node.signer, CHAIN_ID, self.validators, random.Random(master.getrandbits(64)),
                    byzantine[i], self._status_of(node)))
            self.nodes.append(node)
        self.decided: dict[int, tuple[str, str]] = {}  # height -> (block hash, first honest node)
        self.signed: dict[tuple[str, tuple[Any, ...]], str] = {}  # (node, slot) -> content
        self.network: list[tuple[int, float, int, int, int, bytes]] = []  # (due, order, seq, src, dst, data)
        self.seq = 0
        self.drop_p, self.dup_p, self.long_delay_p = self.plan.drop_p, self.plan.dup_p, self.plan.long_delay_p
        self.tx_p = self.plan.tx_p
        self.tx_count = 0
        self.tx_arrivals: dict[int, list[tuple[int, Transaction]]] = {}
        self.restarts: dict[int, list[int]] = {}
        self.active_partitions: list[tuple[Partition, list[int]]] = []
        self.armed: list[Partition] = []  # isolate_decider partitions waiting for their decider
        self.healed = False
        self.restart_heights: dict[int, int] = {}  # node -> its chain height when it last restarted

    # --- running -----------------------------------------------------------------------------------

    def run(self) -> Stats:
        self.trace(f"plan: {self.plan.summary()}")
        for node in self.nodes:
            self._start_engine(node)
        crashes = list(self.plan.crashes)
        partitions = list(self.plan.partitions)
        while self.now < self.chaos_ticks:
            while crashes and crashes[0].at == self.now:
                self._schedule_crash(crashes.pop(0))
            while partitions and partitions[0].start == self.now:
                self._start_partition(partitions.pop(0))
            self._end_partitions()
            self._tick()
        self._heal()
        start = self.now
        live = [n for n in self.nodes if n.honest and not n.down_forever]
        target = max(len(n.chain) for n in self.nodes if n.honest) + self.liveness_heights
        while min(len(n.chain) for n in live) < target:
            if self.now - start >= self.liveness_bound_ticks:
                behind = ", ".join(f"{n.name} at {len(n.chain)}" for n in live if len(n.chain) < target)
                raise Violation("liveness", f"after healing at tick {start}, honest nodes did not reach "
                                f"height {target} within {self.liveness_bound_ticks} ticks ({behind})")
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
        if self.now % SYNC_INTERVAL_TICKS == 0:
            self._sync()
        order = list(range(self.n))
        self.rng.shuffle(order)
        for index in order:
            node = self.nodes[index]
            if node.engine is None:
                continue
            if node.adversary is not None:
                for peer, payload in node.adversary.spontaneous():
                    self._transmit(node.index, self.by_id[peer], payload)
            self._step(node, Tick())
        self.now += 1

    def _step(self, node: SimNode, event: Event) -> None:
        pending: deque[Event] = deque([event])
        while pending and node.engine is not None:
            ev = pending.popleft()
            self.stats.steps += 1
            if self.stats.steps > self.max_steps:
                raise Violation("budget", f"more than {self.max_steps} engine steps: a message storm?")
            try:
                actions = node.engine.step(ev)
            except Exception as exc:
                self.trace(traceback.format_exc())
                what = f"{node.name} raised {exc!r} on {type(ev).__name__}"
                raise Violation("engine_raised", what) from exc
            self._execute(node, actions, pending)

    def _execute(self, node: SimNode, actions: list[Action], pending: deque[Event]) -> None:
        committed = False
        for i, action in enumerate(actions):
            if node.crash_after_actions is not None and i >= node.crash_after_actions:
                self._crash(node, f"halfway through its actions, after {i} of {len(actions)}")
                return
            if isinstance(action, Persist):
                node.disk.update(action.puts)
                for key in action.deletes:
                    node.disk.pop(key, None)
            elif isinstance(action, Send):
                self._send(node, action.to, action.data)
            elif isinstance(action, Broadcast):
                self._send(node, None, action.data)
            elif isinstance(action, BuildProposal):
                pending.append(ProposalBuilt(action.height, action.round, self._build(node, action)))
            elif isinstance(action, Commit):
                self._commit(node, action.block, action.certificate, "consensus")
                committed = True
            else:
                raise Violation("engine_contract", f"{node.name} emitted an unknown action {action!r}")
        if node.crash_after_actions is not None and actions:
            self._crash(node, f"right after executing its {len(actions)} actions")
            return
        if committed and node.mempool:
            pending.append(TxsAvailable())

    # --- the network -------------------------------------------------------------------------------

    def _send(self, node: SimNode, to: str | None, data: bytes) -> None:
        if node.honest:
            info = self.spec.describe(data, self.validators)
            if info is not None and info.slot is not None and info.author == node.id:
                key = (node.id, info.slot)
                before = self.signed.setdefault(key, info.content)
                if before != info.content:
                    raise Violation("equivocation", f"honest {node.name} signed two different messages for "
                                    f"{info.slot}: {before} and {info.content}")
        if node.adversary is not None:
            pairs = node.adversary.outgoing(to, data)
        elif to is None:
            pairs = [(v, data) for v in self.validators if v != node.id]
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
        if node.engine is None or not self._connected(src, dst):
            self.stats.dropped_by_network += 1
            return
        self.stats.deliveries += 1
        if self._trace is not None:
            info = self.spec.describe(data, self.validators)
            what = info.text if info is not None else f"<{len(data)} undecodable bytes>"
            if info is not None and info.author and info.author != self.validators[src]:
                what += f" (signed as n{self.by_id.get(info.author, '?')})"
            self.trace(f"n{src} -> {node.name}  {what}")
        if node.adversary is not None:
            for peer, payload in node.adversary.received(data):
                self._transmit(node.index, self.by_id[peer], payload)
        self._step(node, Received(self.validators[src], data))

    def _connected(self, a: int, b: int) -> bool:
        for partition, side in self.active_partitions:
            if partition.kind == "flapping" and ((self.now - partition.start) // partition.flap_ticks) % 2:
                continue
            if (a in side) != (b in side):
                return False
        return True

    def _start_partition(self, partition: Partition) -> None:
        n = self.n
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

    # --- the runtime model: mempool, proposals, commits, sync --------------------------------------

    def _new_tx(self) -> None:
        tx = sim_tx(self.tx_count)
        self.tx_count += 1
        for node in self.nodes:
            due = self.now + self.rng.randint(0, self.plan.delay_max)
            self.tx_arrivals.setdefault(due, []).append((node.index, tx))

    def _tx_arrives(self, node: SimNode, tx: Transaction) -> None:
        if node.engine is None or tx.hash in node.committed_txs:
            return
        if len(node.mempool) >= MAX_MEMPOOL:
            node.mempool.pop(next(iter(node.mempool)))
        node.mempool[tx.hash] = tx
        self._step(node, TxsAvailable())

    def _build(self, node: SimNode, request: BuildProposal) -> Block | None:
        parent = request.parent
        txs = tuple(list(node.mempool.values())[:MAX_TXS_PER_BLOCK])
        if not txs and (request.round == 0 or not self.spec.empty_block_after_round_0):
            return None
        timestamp = max(parent.timestamp + 1, GENESIS_TIME_MS + self.now * TICK_MS)
        root = hashlib.sha256(b"".join(bytes.fromhex(t.hash) for t in txs)).digest()
        app_hash = hashlib.sha256(bytes.fromhex(parent.app_hash) + root).hexdigest()
        return make_block(CHAIN_ID, request.height, parent.block_hash, timestamp, node.id, txs, app_hash)

    def _commit(self, node: SimNode, block: Block, certificate: dict[str, Any], how: str) -> None:
        height = block.height
        if not self.spec.verify_certificate(block, certificate, self.validators, self.verifier):
            raise Violation("certificate", f"{node.name} committed block {height} {block.hash[:8]} with an "
                            f"invalid certificate {certificate}")
        tip = node.tip()
        if height != tip.height + 1 or block.header.prev_hash != tip.block_hash:
            if not node.honest:
                self.trace(f"{node.name} (Byzantine) commits a fork at height {height}; its chain ignores it")
                return
            raise Violation("continuity", f"{node.name} committed {block.hash[:8]} at height {height} on top "
                            f"of its block {tip.height} {tip.block_hash[:8]}: a committed block would change")
        if node.honest:
            first = self.decided.setdefault(height, (block.hash, node.name))
            if first[0] != block.hash:
                raise Violation("agreement", f"at height {height} honest {first[1]} committed {first[0][:8]} "
                                f"but honest {node.name} committed {block.hash[:8]}")
            if block.header.app_hash == POISON_APP_HASH:
                raise Violation("validity", f"honest {node.name} committed a block its checker rejects")
            if self.spec.checker_once and node.checker.repeated is not None:
                raise Violation("checker_once", f"{node.name} asked its BlockChecker more than once about "
                                f"block {node.checker.repeated[:8]}")
        node.chain.append((block, certificate))
        if self.armed and how == "consensus" and node.honest:
            armed = self.armed.pop(0)
            self.active_partitions.append((armed, [node.index]))
            self.trace(f"PARTITION isolate_decider until {armed.end}: {node.name} cut off right after "
                       f"deciding")
        self.stats.commits += 1
        for tx in block.txs:
            node.mempool.pop(tx.hash, None)
            node.committed_txs.add(tx.hash)
        self.trace(f"{node.name} COMMITS h={height} {block.hash[:8]} ({how}, "
                   f"round {certificate.get('round')}, {len(block.txs)} txs)")

    def _sync(self) -> None:
        """Block sync as the daemon does it: fetch certified blocks from a peer that is ahead."""
        for node in self.nodes:
            if node.engine is None:
                continue
            ahead = [p for p in self.nodes if p.engine is not None and len(p.chain) > len(node.chain)
                     and self._connected(p.index, node.index)]
            if not ahead:
                continue
            peer = self.rng.choice(ahead)
            start = len(node.chain)
            batch = peer.chain[start:start + SYNC_BATCH]
            for block, certificate in batch:
                self._commit(node, block, certificate, f"synced from {peer.name}")
            self._step(node, ChainAdvanced(node.tip(), tuple(b.header.proposer for b, _ in batch)))

    # --- crashes -----------------------------------------------------------------------------------

    def _status_of(self, node: SimNode) -> Callable[[], dict[str, Any]]:
        return lambda: node.engine.status() if node.engine is not None else {}

    def _start_engine(self, node: SimNode) -> None:
        node.checker = SimChecker()
        schedule = self.spec.schedule
        history = min(schedule.window_blocks(self.n) if schedule is not None else 0, len(node.chain))
        ctx = EngineContext(CHAIN_ID, self.validators, node.signer, self.verifier, node.checker, node.tip(),
                            node.rng, dict(node.disk), self.plan.config,
                            [b.header.proposer for b, _ in node.chain[len(node.chain) - history:]])
        try:
            node.engine = self.spec.make(ctx)
        except Exception as exc:
            self.trace(traceback.format_exc())
            raise Violation("engine_raised", f"{node.name} failed to start from its disk: {exc!r}") from exc

    def _schedule_crash(self, crash: Crash) -> None:
        node = self.nodes[crash.node]
        if node.engine is None:
            return
        node.pending_down_ticks = crash.down_ticks
        node.down_forever = crash.down_ticks is None
        if crash.mid_step:
            node.crash_after_actions = self.rng.randint(0, 2)
        else:
            self._crash(node, "between steps")

    def _crash(self, node: SimNode, how: str) -> None:
        self._collect_counters(node)
        node.engine = None
        node.mempool.clear()
        node.crash_after_actions = None
        if node.pending_down_ticks is not None:
            self.restarts.setdefault(self.now + node.pending_down_ticks, []).append(node.index)
        self.trace(f"CRASH {node.name} {how}" + (" (for good)" if node.down_forever else ""))

    def _restart(self, node: SimNode) -> None:
        if node.engine is not None or node.down_forever:
            return
        self._start_engine(node)
        self.restart_heights[node.index] = len(node.chain)
        self.trace(f"RESTART {node.name} at height {len(node.chain)} with {len(node.disk)} engine records")

    def _heal(self) -> None:
        self.healed = True
        self.active_partitions = []
        self.armed = []
        self.drop_p = self.dup_p = self.long_delay_p = 0.0
        self.tx_p = max(self.tx_p, 0.3)
        self.restarts.clear()
        for node in self.nodes:
            node.crash_after_actions = None
            if node.engine is not None:
                node.down_forever = False  # its crash was still pending: it stays up
            elif not node.down_forever:
                self._restart(node)
        self.trace(f"HEAL: network repaired, crashed nodes restarted; liveness phase, up to "
                   f"{self.liveness_bound_ticks} ticks for {self.liveness_heights} more blocks")

    def _check_chains(self) -> None:
        for node in self.nodes:
            if not node.honest:
                continue
            for block, _ in node.chain:
                if self.decided[block.height][0] != block.hash:
                    raise Violation("agreement", f"{node.name}'s block {block.height} differs from the "
                                    f"decided one")

    def _check_scenario(self) -> None:
        if self.scenario not in CALM_SCENARIOS:
            return
        (crash,) = self.plan.crashes
        victim = self.nodes[crash.node]
        chain = max((n.chain for n in self.nodes if n.honest and n is not victim), key=len)
        if self.scenario == "one-down":
            changed = [b.height for b, cert in chain if cert.get("round") != 0]
            if len(changed) > MAX_ROUND_CHANGE_SHARE * len(chain):
                raise Violation("round_changes", f"with {victim.name} down, {len(changed)} of {len(chain)} "
                                f"heights needed a round change (at most {MAX_ROUND_CHANGE_SHARE:.0%} allowed)")
            return
        back = self.restart_heights.get(victim.index, len(chain))
        if not any(b.header.proposer == victim.id for b, _ in chain[back:]):
            raise Violation("rejoin", f"{victim.name}, restarted at height {back}, proposed none of the "
                            f"{len(chain) - back} blocks committed since")

    def _collect_counters(self, node: SimNode) -> None:
        if node.engine is not None and node.honest:
            for name, value in node.engine.counters.items():
                self.stats.counters[name] = self.stats.counters.get(name, 0) + value

    def finish(self) -> None:
        """Fold the counters of the engines still running into the stats."""
        for node in self.nodes:
            self._collect_counters(node)

    def trace(self, line: str) -> None:
        if self._trace is not None:
            self._trace(f"t={self.now:5d}  {line}")
