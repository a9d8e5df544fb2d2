"""The long-haul benchmark: a growing chain on 4 PBFT validators, and what its growth costs.

    python -m cli.bench.longhaul [--transactions 2000000] [--out DIR]     (scripts/bench-longhaul)

Starts a fresh localnet, measures Ed25519 verifications per core (the ceiling), funds `--accounts`
senders, then streams `--transactions` transfers, each to an address never used before (so the run
touches that many distinct accounts, plus the senders), signed in a worker process ahead of the
sender. Every `--sample-s` seconds it writes the committed count, the height and every node's
resident memory to DIR/samples.jsonl. At the end it measures each node's LevelDB bytes per committed
transaction, then stops the last validator and times `ledgerd start` until the node serves GET
/v1/status at the others' height. Writes DIR/result.json, DIR/report.md and DIR/growth.png
(throughput and memory against committed transactions; matplotlib, the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.bench.ceiling import ceiling_tps, cores, share, verify_rate_per_core
from cli.bench.cluster import LocalCluster, dir_bytes, exit_on_sigterm
from cli.bench.growth import first_last, peak_rss, rss_at, rss_growth_last_half, throughput_curve
from cli.bench.setup import BenchError, fund_accounts, load_funded_keys, new_salt
from cli.bench.stream import Stream
from cli.client import LedgerClient

FUND_MARGIN = 1000
SETTLE_TIMEOUT_S = 120.0  # after the load, for every node to reach the same height
RESTART_TIMEOUT_S = 1800.0
CURVE_SPAN_S = 10.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def settle(cluster: LocalCluster, timeout_s: float = SETTLE_TIMEOUT_S) -> int:
    """Wait until every node reports the same height (the load is over); answers it."""
    deadline = time.monotonic() + timeout_s
    while True:
        heights = [int(s["height"]) if (s := cluster.status(k)) else -1 for k in range(cluster.validators)]
        if min(heights) >= 0 and min(heights) == max(heights):
            return heights[0]
        if time.monotonic() > deadline:
            raise BenchError(f"the nodes did not reach one height within {timeout_s:g}s: {heights}")
        time.sleep(0.2)


def load_chain(cluster: LocalCluster, total: int, senders: int, *, fresh: bool, window: int, sample_s: float,
               samples_path: Path | None) -> dict[str, Any]:
    """Calibrate, fund `senders` accounts, stream `total` transfers; answers the run's figures and samples."""
    log("calibrating: Ed25519 verifications per second on one core ...")
    verify_rate, core_count = verify_rate_per_core(), cores()
    client = LedgerClient(cluster.urls[0])
    chain_id = str(client.status()["chain_id"])
    funders = load_funded_keys(cluster.keys_dir)
    log(f"funding {senders} sender accounts ...")
    accounts = fund_accounts(client, chain_id, funders, senders, -(-total // senders) + FUND_MARGIN)
    pids = [cluster.pid(k) for k in range(cluster.validators)]
    log(f"sending {total} transfers{' to fresh accounts' if fresh else ''} (signed ahead in a worker process)")
    out = samples_path.open("w") if samples_path is not None else None
    try:
        stream = Stream(cluster.urls, pids, accounts, chain_id, total, fresh_salt=new_salt() if fresh else None,
                        window=window, sample_s=sample_s, drain_s=60.0, samples_file=out)
        stream.c.height = int(client.status()["height"])  # until the first block event says otherwise
        result = stream.run()
    finally:
        if out is not None:
            out.close()
    c = result.counters
    elapsed = result.ended_s - result.started_s
    tps = c.committed / elapsed if elapsed > 0 else 0.0
    return {"verify_per_s_per_core": round(verify_rate), "cores": core_count, "senders": senders,
            "transactions": total, "sent": c.sent, "accepted": c.accepted, "committed": c.committed,
            "failed": c.failed, "dropped": c.dropped, "retried": c.retried, "http_errors": c.http_errors,
            "refusals": dict(sorted(c.refusals.items())), "height": c.height,
            "elapsed_s": round(elapsed, 1), "committed_tps": round(tps, 1), "samples": result.samples}


def measure(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    cluster.create()
    cluster.start_all()
    run = load_chain(cluster, args.transactions, args.accounts, fresh=True, window=args.window,
                     sample_s=args.sample_s, samples_path=args.out / "samples.jsonl")
    samples = run.pop("samples")
    ceiling = ceiling_tps(run["verify_per_s_per_core"], run["cores"], "pbft", cluster.validators)
    reached = share(run["committed_tps"], ceiling)
    height = settle(cluster)
    # Chain transactions: the stream's plus the funding transfers committed before it.
    chain_txs = run["committed"] + args.accounts
    data = [dir_bytes(cluster.data_dir(k)) for k in range(cluster.validators)]
    log(f"LevelDB bytes per node: {', '.join(f'{b / 2**20:.1f} MiB' for b in data)}")
    last = cluster.validators - 1
    log(f"restarting node {last}: `ledgerd start` until it serves at the others' height ...")
    cluster.stop(last)
    started = cluster.start(last)
    serving, caught_up, _ = cluster.wait_caught_up(last, RESTART_TIMEOUT_S)
    first, final = first_last(samples)
    return {
        **run, "consensus": "pbft", "validators": cluster.validators, "fresh_accounts": True,
        "distinct_accounts": run["committed"] + args.accounts,
        "ceiling_tps": round(ceiling, 1), "share_of_ceiling": None if reached is None else round(reached, 3),
        "tps_first_10pct": None if first is None else round(first, 1),
        "tps_last_10pct": None if final is None else round(final, 1),
        "rss_mb_start": [s for s in samples[0]["rss_mb"]],
        "rss_mb_half": [rss_at(samples, samples[-1]["committed"] / 2, k) for k in range(cluster.validators)],
        "rss_mb_end": samples[-1]["rss_mb"],
        "rss_mb_growth_last_half": rss_growth_last_half(samples), "rss_mb_peak": peak_rss(samples),
        # The node's own memory, without LevelDB's table files mapped from disk (those pages grow
        # with the database read, are shared with the page cache and can be dropped by the kernel).
        "rss_anon_mb_start": samples[0].get("rss_anon_mb"),
        "rss_anon_mb_half": [rss_at(samples, samples[-1]["committed"] / 2, k, "rss_anon_mb")
                             for k in range(cluster.validators)],
        "rss_anon_mb_end": samples[-1].get("rss_anon_mb"),
        "rss_anon_mb_growth_last_half": rss_growth_last_half(samples, "rss_anon_mb"),
        "final_height": height, "chain_txs": chain_txs, "leveldb_bytes": data,
        "leveldb_bytes_per_tx": round(sum(data) / len(data) / chain_txs, 1) if chain_txs else None,
        "restart_serving_s": round(serving - started, 2), "restart_caught_up_s": round(caught_up - started, 2),
        # Points at least 10 s apart (or 1% of the run): a block's lump of commits is not a rate.
        "curve": throughput_curve(samples, max(CURVE_SPAN_S, run["elapsed_s"] / 100)),
        "rss_curve": [(s["committed"], s["rss_mb"]) for s in samples],
    }


def report_md(r: dict[str, Any], png: str | None) -> str:
    def mib(values: list[Any]) -> str:
        return ", ".join("-" if v is None else f"{v:.1f}" for v in values)

    reached = "-" if r["share_of_ceiling"] is None else f"{100 * r['share_of_ceiling']:.1f}%"
    ratio = (f" ({100 * r['tps_last_10pct'] / r['tps_first_10pct']:.0f}% of the first)"
             if r["tps_first_10pct"] and r["tps_last_10pct"] else "")
    lines = [
        "# ledgerd long-haul benchmark", "",
        f"{r['validators']} PBFT validators on one machine ({r['cores']} cores, shared with the load generator "
        f"and its signer process); {r['transactions']:,} transfers from {r['senders']} senders, each to a fresh "
        f"account; measured {r['measured_at']} {code_measured(r['commit'], r.get('commit_at_end'))}.", "",
        "| figure | value |", "|---|---|",
        f"| committed / failed / dropped | {r['committed']:,} / {r['failed']:,} / {r['dropped']:,} |",
        f"| distinct accounts touched | {r['distinct_accounts']:,} |",
        f"| final height | {r['final_height']:,} |",
        f"| committed tx/s over the run ({r['elapsed_s']:,} s) | {r['committed_tps']:,} |",
        f"| ceiling tx/s ({r['verify_per_s_per_core']:,} verifications/s per core x {r['cores']} cores / "
        f"{r['validators']} validators) | {r['ceiling_tps']:,} (share reached: {reached}) |",
        f"| tx/s over the first 10% of the transactions | {r['tps_first_10pct']} |",
        f"| tx/s over the last 10% of the transactions | {r['tps_last_10pct']}{ratio} |",
        f"| RSS MiB per node at the start | {mib(r['rss_mb_start'])} |",
        f"| RSS MiB per node at half the transactions | {mib(r['rss_mb_half'])} |",
        f"| RSS MiB per node at the end | {mib(r['rss_mb_end'])} |",
        f"| RSS growth MiB over the last half, per node | {mib(r['rss_mb_growth_last_half'])} |",
        f"| peak RSS MiB sampled, per node | {mib(r['rss_mb_peak'])} |",
        f"| anonymous RSS MiB per node (RssAnon: without LevelDB files mapped from disk) at the start "
        f"| {mib(r.get('rss_anon_mb_start') or [])} |",
        f"| ... at half the transactions | {mib(r.get('rss_anon_mb_half') or [])} |",
        f"| ... at the end | {mib(r.get('rss_anon_mb_end') or [])} |",
        f"| anonymous RSS growth MiB over the last half, per node "
        f"| {mib(r.get('rss_anon_mb_growth_last_half') or [])} |",
        f"| LevelDB MiB per node | {mib([b / 2**20 for b in r['leveldb_bytes']])} |",
        f"| LevelDB bytes per committed transaction (mean of nodes) | {r['leveldb_bytes_per_tx']} |",
        f"| restart of the last validator: `ledgerd start` until GET /v1/status answers | "
        f"{r['restart_serving_s']} s |",
        f"| ... until it serves at the others' height | {r['restart_caught_up_s']} s |",
        "",
        "RSS is VmRSS of each node with its signature worker processes, sampled every "
        f"{r['sample_s']:g} s (samples.jsonl); LevelDB bytes are every file in a node's data directory; "
        f"the chain's transactions are the {r['committed']:,} streamed plus {r['senders']} funding transfers.",
    ]
    if png:
        lines += ["", f"![Throughput and resident memory against committed transactions]({png})"]
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], out: Path) -> bool:
    """The PNG: throughput and each node's RSS against committed transactions; False without matplotlib."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        log("no matplotlib (pip install -e '.[bench]'): report without the plot")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    curve = r["curve"]
    left.plot([p[0] for p in curve], [p[1] for p in curve], color="C0", linewidth=1)
    # The ceiling goes in the title: drawn as a line it would flatten the curve at the bottom.
    left.set(xlabel="committed transactions", ylabel="committed tx/s",
             title=f"Throughput against chain length (ceiling {r['ceiling_tps']:,.0f} tx/s)")
    left.set_ylim(bottom=0)
    for node in range(r["validators"]):
        points = [(c, rss[node]) for c, rss in r["rss_curve"] if rss[node] is not None]
        right.plot([p[0] for p in points], [p[1] for p in points], label=f"node{node}", linewidth=1)
    right.set(xlabel="committed transactions", ylabel="resident memory (MiB)", title="Node RSS against chain length")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(f"ledgerd long haul: {r['validators']} PBFT validators, transfers to fresh accounts", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


def code_measured(commit: str, commit_at_end: str | None) -> str:
    """Which code the report measured: the commit checked out when the run started (the nodes run
    it), and the one at the end when HEAD moved while the run went on (the restarted validator
    runs that one)."""
    if commit_at_end is None or commit_at_end == commit:
        return f"at commit `{commit}`"
    return (f"at commit `{commit}` (HEAD moved to `{commit_at_end}` during the run; the validator "
            "restarted at the end ran that)")


def commit_id() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.bench.longhaul", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=2_000_000, metavar="N",
                        help="transfers to commit, each to a fresh account (default 2,000,000)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where samples.jsonl, result.json, report.md, growth.png and the node logs go "
                             "(default bench-results/longhaul-<UTC time>)")
    parser.add_argument("--accounts", type=int, default=200, metavar="K", help="sender accounts (default 200)")
    parser.add_argument("--validators", type=int, default=4, metavar="V", help="PBFT validators (default 4)")
    parser.add_argument("--base-port", type=int, default=18101, metavar="P", help="node0's port (default 18101)")
    parser.add_argument("--window", type=int, default=4000, metavar="W",
                        help="most transactions accepted and not yet committed (default 4000)")
    parser.add_argument("--sample-s", type=float, default=5.0, metavar="S", help="seconds between samples (default 5)")
    parser.add_argument("--keep-chain", action="store_true", help="keep the nodes' directories in DIR/cluster")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    for name in ("transactions", "accounts", "validators", "window"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.sample_s <= 0:
        parser.error("--sample-s must be positive")
    if args.validators < 2:
        parser.error("--validators must be at least 2: one is restarted and catches up with the others")
    args.out = args.out or Path("bench-results") / f"longhaul-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "cluster"
    if root.exists():
        raise SystemExit(f"{root} exists: give --out a new directory")
    root.mkdir()
    cluster = LocalCluster(root, args.validators, "pbft", args.base_port)
    started_at = commit_id()  # before the nodes start: the code they run
    try:
        result = measure(args, cluster)
    except BenchError as exc:
        raise SystemExit(f"long haul: {exc}") from None
    finally:
        cluster.stop_all()
        if not args.keep_chain:
            shutil.rmtree(root / "net", ignore_errors=True)
    ended_at = commit_id()
    result.update(measured_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", commit=started_at,
                  commit_at_end=None if ended_at == started_at else ended_at, sample_s=args.sample_s)
    (args.out / "result.json").write_text(json.dumps(result, sort_keys=True) + "\n")
    png = "growth.png" if plot(result, args.out / "growth.png") else None
    text = report_md(result, png)
    (args.out / "report.md").write_text(text)
    print(text)
    log(f"report in {args.out} (report.md, result.json, samples.jsonl{', growth.png' if png else ''})")
    return 0 if result["committed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
