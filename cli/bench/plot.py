"""Turn a scripts/bench-sweep output directory into the tables and plots of docs/benchmarks.md.

    python -m cli.bench.plot DIR

Reads DIR/results.jsonl (one JSON line per run, labelled by cli.bench.sweep) and DIR/sweep.json (the
commit and the machine); writes DIR/summary.md, DIR/throughput-latency.png and, when the sweep has
PBFT runs at several validator counts, DIR/cpu-per-validator.png. The summary lists every run, the
median of each target setup (`*-max`, `*-rate*`), the validator-count comparison (`pbftN-max`), the
Raft against etcd comparison round by round, and the `*-curve` points (one per offered load), which
also make the throughput-latency plot. Plots need matplotlib (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.bench.sweep import cpu_ms_per_tx_per_validator

CURVE_SUFFIX = "-curve"
ETCD_SETUP = "etcd3-check-perf-xl"
RAFT_SETUP = "raft3-max"
VALIDATOR_SETUP = re.compile(r"pbft(\d+)-max")
VALIDATOR_RATIO_TARGET = 1.5  # CPU per tx per validator, 10 validators against 4: at most this
CATCH_UP_SHARE_TARGET = 0.6  # a wiped validator's replayed tx/s against its ceiling: at least this
ETCD_RATIO_TARGET = 2.0  # 3 Raft nodes' committed tx/s against etcd's writes/s: at least this
HALF_MAX_SETUP = "pbft4-halfmax"  # 4 PBFT open loop at half the median of pbft4-max
HALF_MAX_P99_TARGET_MS = 250.0  # p99 latency there: at most this


def load(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise SystemExit(f"{path}:{number}: not a JSON line: {exc}") from None
            if not isinstance(row, dict) or not isinstance(row.get("setup"), str):
                raise SystemExit(f"{path}:{number}: not a JSON object with a 'setup' label")
            rows.append(row)
    return rows


def _median(values: list[Any], digits: int = 1) -> float | None:
    present = [v for v in values if isinstance(v, int | float)]
    return round(float(statistics.median(present)), digits) if present else None


def _show(value: Any) -> str:
    return "-" if value is None else f"{value:.10g}" if isinstance(value, float) else str(value)


def _per_validator(row: dict[str, Any]) -> float | None:
    value = row.get("cpu_ms_per_tx_per_validator")
    return float(value) if isinstance(value, int | float) else cpu_ms_per_tx_per_validator(row)


def _is_bench(row: dict[str, Any]) -> bool:
    return "committed_tps" in row and not _is_catch_up(row)


def _is_catch_up(row: dict[str, Any]) -> bool:
    return row.get("mode") == "catch-up"


def header(meta: dict[str, Any] | None) -> list[str]:
    if not meta:
        return ["Commit and machine not recorded (no sweep.json next to results.jsonl)."]
    dirty = meta.get("dirty")
    state = ("with uncommitted changes: the figures are not those of the commit alone" if dirty
             else "clean tree" if dirty is False else "tree state unknown")
    load_avg = " / ".join(_show(x) for x in meta.get("load_avg_start") or []) or "-"
    arguments = " ".join(meta.get("arguments") or [])
    lines = [f"Swept at commit `{meta.get('commit') or 'unknown'}` ({state}), started {meta.get('started_utc')} "
             f"with `./scripts/bench-sweep{' ' + arguments if arguments else ''}`.",
             "",
             f"Machine: {_show(meta.get('cores'))} cores ({meta.get('cpu_model') or 'CPU model unknown'}), "
             f"{_show(meta.get('memory_gib'))} GiB, Linux {meta.get('kernel') or '-'}, "
             f"Python {meta.get('python') or '-'}; load average (1, 5, 15 min) at the start: {load_avg}."]
    if "--quick" in (meta.get("arguments") or []):
        lines += ["", "**A --quick sweep: short runs that check the harness; its figures are not comparable.**"]
    return lines


def every_run(rows: list[dict[str, Any]]) -> list[str]:
    ceiling = any("share_of_ceiling" in r for r in rows)
    lines = ["| run | round | setup | offered tx/s | committed tx/s | p50 ms | p99 ms | node CPU ms per tx | "
             "CPU ms per tx per validator |" + (" share of ceiling |" if ceiling else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if ceiling else "")]
    for number, row in enumerate(rows, 1):
        if _is_bench(row):
            cells = [_show(row.get("offered_tps")), _show(row["committed_tps"]), _show(row.get("latency_ms_p50")),
                     _show(row.get("latency_ms_p99")), _show(row.get("node_cpu_ms_per_tx")),
                     _show(_per_validator(row))]
        elif _is_catch_up(row):  # replayed tx/s in the throughput column
            cells = ["-", f"{_show(row.get('catch_up_tps'))} replayed", "-", "-", "-", "-"]
        else:  # the etcd yardstick: writes/s in the throughput column
            cells = ["-", f"{_show(row.get('writes_per_s'))} writes/s", "-", "-", "-", "-"]
        lines.append(f"| {row.get('run', number)} | {_show(row.get('round'))} | {row['setup']} | "
                     + " | ".join(cells) + " |" + (f" {_show(row.get('share_of_ceiling'))} |" if ceiling else ""))
    return lines


def medians(rows: list[dict[str, Any]]) -> list[str]:
    by_setup: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if _is_bench(row) and not row["setup"].endswith(CURVE_SUFFIX):
            by_setup[row["setup"]].append(row)
    ceiling = any("share_of_ceiling" in r for runs in by_setup.values() for r in runs)
    lines = ["| setup | runs | committed tx/s (median; each run) | p50 ms | p95 ms | p99 ms | "
             "node CPU % (median of nodes) | node CPU ms per tx (all nodes) | CPU ms per tx per validator | "
             "peak RSS MiB (max of nodes) |" + (" share of ceiling |" if ceiling else ""),
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if ceiling else "")]
    for setup, runs in by_setup.items():
        tps = [r["committed_tps"] for r in runs]
        nodes = [n for r in runs for n in r.get("nodes") or []]
        rss = [n["peak_rss_mb"] for n in nodes if isinstance(n.get("peak_rss_mb"), int | float)]

        def med(key: str, digits: int = 1, runs: list[dict[str, Any]] = runs) -> str:
            return _show(_median([r.get(key) for r in runs], digits))

        lines.append(
            f"| {setup} | {len(runs)} | **{_show(_median(tps))}** ({', '.join(_show(t) for t in tps)}) | "
            f"{med('latency_ms_p50')} | {med('latency_ms_p95')} | {med('latency_ms_p99')} | "
            f"{_show(_median([n.get('cpu_percent') for n in nodes]))} | {med('node_cpu_ms_per_tx', 3)} | "
            f"{_show(_median([_per_validator(r) for r in runs], 4))} | {_show(max(rss)) if rss else '-'} |"
            + (f" {med('share_of_ceiling', 3)} |" if ceiling else ""))
    return lines


def validator_counts(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """The closed-loop PBFT runs by validator count (`pbft4-max`, `pbft7-max`, ...)."""
    counts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        match = VALIDATOR_SETUP.fullmatch(row["setup"])
        if match and _is_bench(row):
            counts[int(match.group(1))].append(row)
    return dict(sorted(counts.items()))


def validator_table(rows: list[dict[str, Any]]) -> list[str]:
    counts = {n: runs for n, runs in validator_counts(rows).items() if n > 1}
    if len(counts) < 2:
        return []
    base = _median([_per_validator(r) for r in counts[min(counts)]], 4)
    lines = ["| PBFT validators | runs | committed tx/s (median) | node CPU ms per tx, all nodes (median) | "
             f"CPU ms per tx per validator (median) | against {min(counts)} validators |",
             "|---|---|---|---|---|---|"]
    for n, runs in counts.items():
        per = _median([_per_validator(r) for r in runs], 4)
        ratio = f"{per / base:.2f}x" if per is not None and base else "-"
        lines.append(f"| {n} | {len(runs)} | {_show(_median([r['committed_tps'] for r in runs]))} | "
                     f"{_show(_median([r.get('node_cpu_ms_per_tx') for r in runs], 3))} | {_show(per)} | {ratio} |")
    if 4 in counts and 10 in counts:
        four = _median([_per_validator(r) for r in counts[4]], 4)
        ten = _median([_per_validator(r) for r in counts[10]], 4)
        if four and ten is not None:
            ratio_10 = ten / four
            verdict = "met" if ratio_10 <= VALIDATOR_RATIO_TARGET else "not met"
            lines += ["", f"CPU per transaction per validator, 10 validators against 4: **{ratio_10:.2f}x** "
                          f"(target: at most {VALIDATOR_RATIO_TARGET:g}x; {verdict})."]
    return lines


def _by_round(rows: list[dict[str, Any]], setup: str, keep: Callable[[dict[str, Any]], bool]) -> dict[Any, Any]:
    """A setup's runs by round; rows without a round are numbered in the order they ran."""
    chosen = [r for r in rows if r["setup"] == setup and keep(r)]
    return {r.get("round") if r.get("round") is not None else index: r for index, r in enumerate(chosen, 1)}


def etcd_table(rows: list[dict[str, Any]]) -> list[str]:
    raft = _by_round(rows, RAFT_SETUP, _is_bench)
    etcd = _by_round(rows, ETCD_SETUP, lambda r: isinstance(r.get("writes_per_s"), int | float))
    if not etcd:
        return []
    lines = [f"| round | {RAFT_SETUP}: committed tx/s | {ETCD_SETUP}: etcd writes/s | ratio |", "|---|---|---|---|"]
    ratios = []
    for round_ in sorted(set(raft) | set(etcd)):
        tps = raft[round_]["committed_tps"] if round_ in raft else None
        writes = etcd[round_]["writes_per_s"] if round_ in etcd else None
        ratio = tps / writes if tps is not None and writes else None
        if ratio is not None:
            ratios.append(ratio)
        lines.append(f"| {round_} | {_show(tps)} | {_show(writes)} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    version = next((r.get("etcd_version") for r in etcd.values() if r.get("etcd_version")), None)
    if ratios:
        median = statistics.median(ratios)
        verdict = "met" if median >= ETCD_RATIO_TARGET else "not met"
        lines += ["", f"3 Raft nodes against a 3-member etcd {version or ''} cluster on the same machine, "
                      f"measured back to back: median ratio **{median:.2f}x** (target: at least "
                      f"{ETCD_RATIO_TARGET:g}x; {verdict})."]
    return lines


def catch_up_table(rows: list[dict[str, Any]]) -> list[str]:
    runs = [r for r in rows if _is_catch_up(r)]
    if not runs:
        return []
    lines = ["| round | validators | chain txs | restart to serving s | restart to the others' height s | "
             "replayed tx/s | ceiling tx/s | share of ceiling |", "|---|---|---|---|---|---|---|---|"]
    for row in runs:
        lines.append(f"| {_show(row.get('round'))} | {_show(row.get('validators'))} | {_show(row.get('chain_txs'))} | "
                     f"{_show(row.get('catch_up_serving_s'))} | {_show(row.get('catch_up_s'))} | "
                     f"{_show(row.get('catch_up_tps'))} | {_show(row.get('ceiling_tps'))} | "
                     f"{_show(row.get('share_of_ceiling'))} |")
    share = _median([r.get("share_of_ceiling") for r in runs], 3)
    if share is not None:
        verdict = "met" if share >= CATCH_UP_SHARE_TARGET else "not met"
        lines += ["", f"A wiped validator's replay: median **{_show(_median([r.get('catch_up_tps') for r in runs]))}"
                      f" tx/s**, {share:.1%} of its ceiling (target: at least {CATCH_UP_SHARE_TARGET:.0%}; {verdict})."]
    return lines


def half_max_table(rows: list[dict[str, Any]]) -> list[str]:
    runs = [r for r in rows if r["setup"] == HALF_MAX_SETUP and _is_bench(r)]
    if not runs:
        return []
    lines = ["| round | offered tx/s | committed tx/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for row in runs:
        lines.append(f"| {_show(row.get('round'))} | {_show(row.get('offered_tps'))} | {_show(row['committed_tps'])} | "
                     f"{_show(row.get('latency_ms_p50'))} | {_show(row.get('latency_ms_p99'))} |")
    p99 = _median([r.get("latency_ms_p99") for r in runs])
    if p99 is not None:
        verdict = "met" if p99 <= HALF_MAX_P99_TARGET_MS else "not met"
        lines += ["", f"4 PBFT validators offered half their closed-loop median: p99 median **{_show(p99)} ms** "
                      f"(target: at most {HALF_MAX_P99_TARGET_MS:g} ms; {verdict})."]
    return lines


def curves(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| curve | offered tx/s | committed tx/s | p50 ms | p99 ms | dropped |", "|---|---|---|---|---|---|"]
    for row in sorted((r for r in rows if r["setup"].endswith(CURVE_SUFFIX) and _is_bench(r)),
                      key=lambda r: (r["setup"], r.get("offered_tps") or 0)):
        lines.append(f"| {row['setup'].removesuffix(CURVE_SUFFIX)} | {_show(row.get('offered_tps'))} | "
                     f"{_show(row['committed_tps'])} | {_show(row.get('latency_ms_p50'))} | "
                     f"{_show(row.get('latency_ms_p99'))} | {_show(row.get('dropped'))} |")
    return lines


def summary(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    parts = [["# Benchmark sweep", ""] + header(meta),
             ["## Target setups (median of their runs; every run in parentheses)", ""] + medians(rows)]
    validators = validator_table(rows)
    if validators:
        parts.append(["## Validator count (PBFT, closed loop)", ""] + validators)
    etcd = etcd_table(rows)
    if etcd:
        parts.append(["## 3 Raft nodes and etcd, round by round", ""] + etcd)
    half_max = half_max_table(rows)
    if half_max:
        parts.append(["## p99 at half the maximum (4 PBFT, open loop)", ""] + half_max)
    catch_up = catch_up_table(rows)
    if catch_up:
        parts.append(["## Catch-up: a wiped validator replays the chain (4 PBFT)", ""] + catch_up)
    parts.append(["## Throughput and latency against offered load (one run per point)", ""] + curves(rows))
    parts.append(["## Every run, in the order it ran", ""] + every_run(rows))
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


def _pyplot() -> Any:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise SystemExit("the plots need matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    return plt


def plot(rows: list[dict[str, Any]], out: Path) -> bool:
    """The throughput-latency plot of the `*-curve` runs; False (and no file) when there are none."""
    curves: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["setup"].endswith(CURVE_SUFFIX) and _is_bench(row):
            curves[row["setup"].removesuffix(CURVE_SUFFIX)].append(row)
    if not curves:
        return False
    plt = _pyplot()
    import matplotlib.ticker  # type: ignore[import-not-found, unused-ignore]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    top = 0.0
    for index, (name, points) in enumerate(sorted(curves.items())):
        color = f"C{index}"
        points.sort(key=lambda r: r["offered_tps"])
        offered = [r["offered_tps"] for r in points]
        top = max(top, *offered)
        left.plot(offered, [r["committed_tps"] for r in points], marker="o", color=color, label=name)
        right.plot(offered, [r["latency_ms_p50"] for r in points], marker="o", color=color, label=f"{name} p50")
        right.plot(offered, [r["latency_ms_p99"] for r in points], marker="^", linestyle="--", color=color,
                   label=f"{name} p99")
    left.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":", label="committed = offered")
    left.set(xlabel="offered tx/s", ylabel="committed tx/s", title="Throughput")
    right.set(xlabel="offered tx/s", ylabel="latency, submit to commit (ms)", title="Latency", yscale="log")
    right.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    right.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    right.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("ledgerd on one 2-core machine (cluster and load generator together)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_validators(rows: list[dict[str, Any]], out: Path) -> bool:
    """Bars of committed tx/s and CPU per tx per validator by PBFT validator count (medians, every run
    as a dot); False (and no file) with fewer than two counts."""
    counts = {n: runs for n, runs in validator_counts(rows).items() if n > 1}
    if len(counts) < 2:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = [str(n) for n in counts]
    for axis, value, title in ((left, lambda r: r["committed_tps"], "committed tx/s (closed loop)"),
                               (right, _per_validator, "CPU ms per tx per validator")):
        per_run = [[v for v in (value(r) for r in runs) if v is not None] for runs in counts.values()]
        axis.bar(labels, [statistics.median(v) if v else 0 for v in per_run], color="C0", alpha=0.7)
        for label, values in zip(labels, per_run, strict=True):
            axis.plot([label] * len(values), values, "o", color="C1", markersize=3)
        axis.set(xlabel="PBFT validators", title=title)
        axis.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Validator count on one 2-core machine (bars: median; dots: each run)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.bench.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a scripts/bench-sweep output directory (holding results.jsonl)")
    args = parser.parse_args(argv)
    results = args.dir / "results.jsonl"
    if not results.is_file():
        raise SystemExit(f"{results}: no such file (give the directory scripts/bench-sweep wrote)")
    rows = load(results)
    meta_path = args.dir / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    text = summary(rows, meta)
    (args.dir / "summary.md").write_text(text)
    print(text)
    for name, draw in (("throughput-latency.png", plot), ("cpu-per-validator.png", plot_validators)):
        if draw(rows, args.dir / name):
            print(f"wrote {args.dir / name}", file=sys.stderr)
        else:
            print(f"no runs for {name}; not drawn", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
