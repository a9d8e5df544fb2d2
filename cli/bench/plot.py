"""Turn scripts/bench-sweep's results.jsonl into the plot and the summary tables of the report.

    python -m cli.bench.plot results.jsonl throughput-latency.png [--summary summary.md]

The target setups (`*-max`, `*-rate*` labels) are summarised by the median of their runs; the
`*-curve` runs (one per offered load) become the plot: committed against offered tx/s, and
latency p50/p99 against offered tx/s, one line per consensus engine. Needs matplotlib (the
`bench` extra: `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

CURVE_SUFFIX = "-curve"


def load(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise SystemExit(f"{path}:{number}: not a JSON line: {exc}") from None
    return rows


def _median(values: list[Any], digits: int = 1) -> Any:
    present = [v for v in values if v is not None]
    return round(float(statistics.median(present)), digits) if present else None


def summary(rows: list[dict[str, Any]]) -> str:
    by_setup: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_setup[row["setup"]].append(row)
    lines = ["| setup | runs | committed tx/s (median; each run) | p50 ms | p95 ms | p99 ms | "
             "node CPU % (median of nodes) | node CPU ms per tx (all nodes) | peak RSS MiB (max of nodes) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for setup, runs in by_setup.items():
        if setup.endswith(CURVE_SUFFIX):
            continue
        tps = [r["committed_tps"] for r in runs]
        cpus = [n["cpu_percent"] for r in runs for n in r["nodes"]]
        rss = [n["peak_rss_mb"] for r in runs for n in r["nodes"] if n["peak_rss_mb"] is not None]
        lines.append(
            f"| {setup} | {len(runs)} | **{_median(tps)}** ({', '.join(str(t) for t in tps)}) | "
            f"{_median([r['latency_ms_p50'] for r in runs])} | {_median([r['latency_ms_p95'] for r in runs])} | "
            f"{_median([r['latency_ms_p99'] for r in runs])} | {_median(cpus)} | "
            f"{_median([r.get('node_cpu_ms_per_tx') for r in runs], 3)} | {max(rss) if rss else '-'} |")
    lines += ["", "| curve | offered tx/s | committed tx/s | p50 ms | p99 ms | dropped |", "|---|---|---|---|---|---|"]
    for row in sorted((r for r in rows if r["setup"].endswith(CURVE_SUFFIX)),
                      key=lambda r: (r["setup"], r["offered_tps"])):
        lines.append(f"| {row['setup']} | {row['offered_tps']:g} | {row['committed_tps']} | "
                     f"{row['latency_ms_p50']} | {row['latency_ms_p99']} | {row['dropped']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    import matplotlib.ticker  # type: ignore[import-not-found, unused-ignore]

    curves: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["setup"].endswith(CURVE_SUFFIX):
            curves[row["setup"].removesuffix(CURVE_SUFFIX)].append(row)
    if not curves:
        raise SystemExit("no *-curve runs in the results: nothing to plot")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.bench.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="results.jsonl written by scripts/bench-sweep")
    parser.add_argument("png", type=Path, help="where to write the plot")
    parser.add_argument("--summary", type=Path, help="also write the markdown tables here")
    args = parser.parse_args(argv)
    rows = load(args.results)
    if args.summary:
        args.summary.write_text(summary(rows))
    plot(rows, args.png)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
