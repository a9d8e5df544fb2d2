"""Run seeds and report: the library behind `scripts/simulate` and the simulation tests."""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tests.sim.engines import ENGINES, EngineSpec
from tests.sim.world import CALM_SCENARIOS, CALM_TICKS, SCENARIOS, Crash, Violation, World

CHAOS_TICKS = 400
LIVENESS_HEIGHTS = 3
# The liveness bound is stated in units of the largest round timeout the seed uses (see
# world.make_plan: 8 x the base timeout): heal, converge on a round, skip up to f faulty proposers.
LIVENESS_BOUND_MAX_TIMEOUTS = 12
MAX_STEPS_PER_NODE = 60_000
CRASH_EVERY_TICKS = 6
MAX_DOWN_TICKS = 10
RUNS = "real node core, in-memory disk with faults"  # what the summary says was simulated


@dataclass(frozen=True)
class SeedResult:
    engine: str
    nodes: int
    seed: int
    harsh: bool
    ok: bool
    violation: str
    kind: str
    heights: int  # the lowest chain height among honest nodes at the end
    commits: int
    consensus_commits: int  # commits decided by a node's own engine
    synced_commits: int  # commits stored by block sync
    halts: int  # nodes halted for good by a disk fault
    deliveries: int
    ticks: int
    liveness_ticks: int | None
    counters: dict[str, int]
    scenario: str = "mixed"
    valset: bool = False
    changes: tuple[str, ...] = ()  # validator-set changes that came into force, e.g. "add n4 at 12"
    valset_skipped: str = ""  # why the chain refused the seed's changes (then it ran without them)

    def replay_command(self) -> str:
        harsh = " --harsh" if self.harsh else ""
        scenario = f" --scenario {self.scenario}" if self.scenario != "mixed" else ""
        valset = " --valset" if self.valset else ""
        return (f"./scripts/simulate --engine {self.engine} --nodes {self.nodes}{harsh}{scenario}{valset} "
                f"--seed {self.seed} --trace")


def run_seed(engine: str, nodes: int, seed: int, trace: Callable[[str], None] | None = None,
             chaos_ticks: int = CHAOS_TICKS, harsh: bool = False, scenario: str = "mixed",
             valset: bool = False) -> SeedResult:
    spec = ENGINES[engine]
    world = World(spec, nodes, seed, chaos_ticks, LIVENESS_HEIGHTS, LIVENESS_BOUND_MAX_TIMEOUTS,
                  MAX_STEPS_PER_NODE * nodes * max(1, world_ticks(scenario, chaos_ticks) // chaos_ticks), trace,
                  harsh, scenario, valset)
    violation, kind = "", ""
    try:
        world.run()
    except Violation as exc:
        violation, kind = str(exc), exc.kind
        world.trace(f"VIOLATION {exc}")
    except Exception as exc:  # a bug in the simulator itself: report it like a failing seed
        violation, kind = f"simulator error: {exc!r}", "simulator_error"
        world.trace(traceback.format_exc())
    world.finish()
    honest = [n for n in world.nodes if n.honest and not n.down_forever]
    return SeedResult(engine, nodes, seed, harsh, not violation, violation, kind,
                      min(n.height for n in honest), world.stats.commits, world.stats.consensus_commits,
                      world.stats.synced_commits, world.stats.halts, world.stats.deliveries,
                      world.now, world.stats.liveness_ticks, world.stats.counters, scenario, valset,
                      tuple(world.changes.done) if world.changes is not None else (), world.valset_skipped)


def world_ticks(scenario: str, chaos_ticks: int) -> int:
    """How long the fault phase of `scenario` runs (the calm ones run longer)."""
    return max(chaos_ticks, CALM_TICKS) if scenario in CALM_SCENARIOS else chaos_ticks


class CrashStorm(World):
    """The seed's usual faults plus a crash every CRASH_EVERY_TICKS ticks: a random node goes down
    for 1..MAX_DOWN_TICKS ticks, half of the time halfway through an action list."""

    def __init__(self, spec: EngineSpec, n: int, seed: int,
                 trace: Callable[[str], None] | None = None) -> None:
        super().__init__(spec, n, seed, CHAOS_TICKS, LIVENESS_HEIGHTS, LIVENESS_BOUND_MAX_TIMEOUTS,
                         MAX_STEPS_PER_NODE * n, trace)
        rng = random.Random(seed * 7919 + 1)
        storm = tuple(Crash(rng.randrange(n), at, rng.randint(1, MAX_DOWN_TICKS), rng.random() < 0.5)
                      for at in range(5, CHAOS_TICKS, CRASH_EVERY_TICKS))
        crashes = tuple(sorted(self.plan.crashes + storm, key=lambda c: c.at))
        self.plan = dataclasses.replace(self.plan, crashes=crashes)


def storm(spec: EngineSpec, n: int, seed: int,
          trace: Callable[[str], None] | None = None) -> Violation | None:
    """Run one crash-storm seed; replay one with `storm(ENGINES["raft"], 5, seed, print)`."""
    try:
        CrashStorm(spec, n, seed, trace).run()
    except Violation as exc:
        return exc
    return None


def _run_one(args: tuple[str, int, int, int, bool, str, bool]) -> SeedResult:
    engine, nodes, seed, chaos_ticks, harsh, scenario, valset = args
    return run_seed(engine, nodes, seed, chaos_ticks=chaos_ticks, harsh=harsh, scenario=scenario, valset=valset)


def run_seeds(engine: str, nodes: int, seeds: range, jobs: int = 1, chaos_ticks: int = CHAOS_TICKS,
              harsh: bool = False, scenario: str = "mixed", valset: bool = False) -> Iterator[SeedResult]:
    work = [(engine, nodes, s, chaos_ticks, harsh, scenario, valset) for s in seeds]
    if jobs <= 1:
        yield from map(_run_one, work)
        return
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap(_run_one, work, chunksize=8)


def _seed_range(text: str) -> range:
    lo, sep, hi = text.partition("-")
    try:
        first = int(lo)
        last = int(hi) if sep else first
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A-B or N, got {text!r}") from None
    if first < 0 or last < first:
        raise argparse.ArgumentTypeError(f"empty or negative seed range {text!r}")
    return range(first, last + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/simulate",
        description="Deterministic simulation of the node's real core (engine, store over an in-memory "
                    "disk, mempool, executor) under network faults, crashes, disk faults and Byzantine "
                    "validators. Exit status 1 when any seed violates safety or liveness.")
    parser.add_argument("--engine", default="pbft", choices=sorted(ENGINES))
    parser.add_argument("--nodes", type=int, default=4)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=_seed_range, default=range(0, 100), help="a range A-B (inclusive)")
    group.add_argument("--seed", type=int, help="run one seed")
    parser.add_argument("--trace", action="store_true", help="print a readable event trace (with --seed)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--chaos-ticks", type=int, default=CHAOS_TICKS, help="length of the fault phase")
    parser.add_argument("--counters", action="store_true",
                        help="also print the honest engines' counters (drops by reason, round changes, ...)")
    parser.add_argument("--harsh", action="store_true",
                        help="every seed gets every kind of fault (the default mix keeps some calm seeds)")
    parser.add_argument("--scenario", default="mixed", choices=SCENARIOS,
                        help="mixed: the random fault mix; down / down-restart: plus one validator crashed "
                             "for good / for long; one-down / one-back: calm, one validator down from the "
                             "start (for good / restarting), checking round changes / that it rejoins")
    parser.add_argument("--valset", action="store_true",
                        help="a committee changes the validator set during the faults: adds a node that "
                             "followed as an observer, removes and rotates validators (see tests/sim/changes.py)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if args.trace and args.seed is None:
        parser.error("--trace needs --seed N")
    if args.valset and args.scenario in CALM_SCENARIOS:
        parser.error(f"--valset goes with the fault mix, not with the calm scenario {args.scenario!r}")
    if args.seed is not None:
        trace = print if args.trace else None
        result = run_seed(args.engine, args.nodes, args.seed, trace, args.chaos_ticks, args.harsh, args.scenario,
                          args.valset)
        status = "ok" if result.ok else f"FAIL {result.violation}"
        scenario = f" {args.scenario}" if args.scenario != "mixed" else ""
        if args.valset:
            scenario += " valset" + (f" ({', '.join(result.changes) or 'no change in force'})"
                                     if not result.valset_skipped else f" (skipped: {result.valset_skipped})")
        print(f"{args.engine} n={args.nodes}{scenario} seed {args.seed} ({RUNS}): {status}; "
              f"heights {result.heights}, "
              f"{result.consensus_commits} consensus + {result.synced_commits} synced commits, "
              f"{result.halts} disk halts, {result.deliveries} deliveries, {result.ticks} ticks, "
              f"liveness in {result.liveness_ticks} ticks")
        if not result.ok and not args.trace:
            print(f"replay: {result.replay_command()}")
        return 0 if result.ok else 1
    started = time.monotonic()
    failures: list[SeedResult] = []
    heights = deliveries = count = consensus = synced = halts = 0
    worst_liveness = 0
    counters: dict[str, int] = {}
    changes: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for result in run_seeds(args.engine, args.nodes, args.seeds, args.jobs, args.chaos_ticks, args.harsh,
                            args.scenario, args.valset):
        count += 1
        for change in result.changes:
            kind = change.split()[0]
            changes[kind] = changes.get(kind, 0) + 1
        if result.valset_skipped:
            skipped[result.valset_skipped] = skipped.get(result.valset_skipped, 0) + 1
        heights += result.heights
        deliveries += result.deliveries
        consensus += result.consensus_commits
        synced += result.synced_commits
        halts += result.halts
        worst_liveness = max(worst_liveness, result.liveness_ticks or 0)
        for name, value in result.counters.items():
            counters[name] = counters.get(name, 0) + value
        if not result.ok:
            failures.append(result)
            print(f"FAIL seed {result.seed}: {result.violation}\n  replay: {result.replay_command()}",
                  file=sys.stderr)
    elapsed = time.monotonic() - started
    profile = (" harsh" if args.harsh else "") + (f" {args.scenario}" if args.scenario != "mixed" else "")
    if args.valset:
        profile += " valset"
        done = ", ".join(f"{changes.get(k, 0)} {k}" for k in ("add", "remove", "rotate"))
        valset_note = f"validator-set changes in force: {done}; "
        valset_note += "".join(f"changes SKIPPED in {k} seeds, the chain refuses them ({why}); "
                               for why, k in sorted(skipped.items()))
    else:
        valset_note = ""
    print(f"{args.engine} n={args.nodes}{profile} seeds {args.seeds.start}-{args.seeds.stop - 1} ({RUNS}): "
          f"{count - len(failures)} passed, {len(failures)} failed; {heights} honest blocks, "
          f"{consensus} consensus + {synced} synced commits, {halts} disk halts, {valset_note}"
          f"{deliveries} deliveries, slowest liveness {worst_liveness} ticks; {elapsed:.1f}s")
    if args.counters:
        for name in sorted(counters):
            print(f"  {name:45s} {counters[name]:>10d}")
    return 1 if failures else 0
