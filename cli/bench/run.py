"""`ledgerd bench`: set up, run, report. Called by cli.main with the parsed arguments."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cli.bench.ceiling import ceiling_tps, cores, verify_rate_per_core
from cli.bench.load import Bench
from cli.bench.report import figures, json_line, table
from cli.bench.setup import BenchError, fund_accounts, load_funded_keys, presign
from cli.bench.stats import cpu_percent, cpu_sample, cpu_used_s, peak_rss_mb
from cli.client import LedgerClient

MAX_MODE_PRESIGN_TPS = 8000  # closed-loop pre-signs duration * this many (or --presign)
DRAIN_S = 15.0  # after sending stops, how long to wait for accepted transactions to commit
STOP_WAIT_S = 15.0  # --down: how long a stopped node may take to exit


def _running(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie waiting for its parent has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def stop_nodes(pids: list[int]) -> None:
    """SIGTERM each node and wait until it has exited, so that the clock starts with them gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + STOP_WAIT_S
    while any(_running(p) for p in pids):
        if time.monotonic() > deadline:
            raise BenchError(f"--down: node(s) {', '.join(str(p) for p in pids if _running(p))} did not exit "
                             f"within {STOP_WAIT_S:g}s of SIGTERM")
        time.sleep(0.1)


def run_bench(nodes: list[str], rate: float | None, duration_s: float, accounts: int, keys_dir: Path,
              pids: list[int] | None, presign_count: int | None, window: int = 4000, down: int = 0,
              fresh_accounts: bool = False) -> int:
    if pids is not None and len(pids) != len(nodes):
        raise BenchError(f"--pids lists {len(pids)} PIDs for {len(nodes)} nodes; give one per node")
    if down and (pids is None or down >= len(nodes)):
        raise BenchError(f"--down {down} needs --pids and leaves at least one of the {len(nodes)} nodes running")
    client = LedgerClient(nodes[0])
    status = client.status()
    chain_id = str(status["chain_id"])
    # Before any load, while the nodes are idle: the machine's limit this run is measured against.
    print("calibrating: Ed25519 verifications per second on one core ...", file=sys.stderr, flush=True)
    verify_rate, core_count = verify_rate_per_core(), cores()
    consensus, validators = str(status.get("consensus")), len(status.get("validators") or [])
    # With --down K, only the validators still running check each transaction.
    ceiling = (ceiling_tps(verify_rate, core_count, consensus, validators - down)
               if consensus in ("pbft", "raft") and validators > down else None)
    print(f"  {verify_rate:.0f} verifications/s per core x {core_count} cores: ceiling "
          f"{'-' if ceiling is None else f'{ceiling:.0f}'} tx/s for {validators - down} running {consensus} "
          "validator(s)",
          file=sys.stderr, flush=True)
    funders = load_funded_keys(keys_dir)
    total = presign_count or (int(rate * duration_s) if rate is not None
                              else int(duration_s * MAX_MODE_PRESIGN_TPS))
    total = max(total, 1)
    per_account = -(-total // accounts)
    print(f"funding {accounts} accounts from {len(funders)} funded keys ...", file=sys.stderr, flush=True)
    fresh = fund_accounts(client, chain_id, funders, accounts, per_account + 1000)
    print(f"signing {total} transactions ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    txs = presign(fresh, chain_id, total, fresh=fresh_accounts)
    if down:
        assert pids is not None
        print(f"stopping {', '.join(nodes[-down:])} (pid {', '.join(str(p) for p in pids[-down:])}) ...",
              file=sys.stderr, flush=True)
        stop_nodes(pids[-down:])
        nodes, pids = nodes[:-down], pids[:-down]
    how = f"at {rate:g} tx/s" if rate is not None else "as fast as the cluster takes them"
    print(f"signed in {time.monotonic() - started:.1f}s; sending "
          f"{how} "
          f"for {duration_s:g}s to {len(nodes)} node(s)", file=sys.stderr, flush=True)

    bench = Bench(nodes, txs, rate=rate, duration_s=duration_s, drain_s=DRAIN_S, tty=sys.stderr.isatty(),
                  window=window)
    before = [cpu_sample(p, time.monotonic()) if p else None for p in (pids or [0] * len(nodes))]
    t0 = asyncio.run(bench.run())
    end = bench.c.last_commit_s or time.monotonic()
    after = [cpu_sample(p, time.monotonic()) if p else None for p in (pids or [0] * len(nodes))]
    node_stats: list[dict[str, Any]] = []
    for i, url in enumerate(nodes):
        pid = pids[i] if pids else None
        used = cpu_used_s(before[i], after[i])
        node_stats.append({"url": url, "pid": pid, "cpu_percent": cpu_percent(before[i], after[i]),
                           "cpu_s": None if used is None else round(used, 2),
                           "peak_rss_mb": peak_rss_mb(pid) if pid else None})
    result = figures(bench.c, consensus=consensus, validators=validators,
                     tx_bytes=round(sum(len(t.body) for t in txs) / len(txs)),
                     offered_tps=rate if rate is not None else bench.c.sent / duration_s,
                     duration_s=duration_s, elapsed_s=end - t0, cpu_cores=os.cpu_count() or 0,
                     nodes=node_stats, mode="open-loop" if rate is not None else "closed-loop",
                     validators_down=down, verify_per_s_per_core=verify_rate, cores=core_count,
                     ceiling_tps=ceiling, fresh_accounts=fresh_accounts)
    if bench.ran_out_s is not None:
        print(f"warning: all {len(txs)} pre-signed transactions were sent after {bench.ran_out_s:.1f}s of "
              f"{duration_s:g}s; the figures cover a shorter run (pass --presign N for more)",
              file=sys.stderr, flush=True)
    print(table(result))
    print(json_line(result), flush=True)
    return 0 if bench.c.committed > 0 else 1
