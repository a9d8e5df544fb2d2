"""Catch-up as a benchmark figure: how fast a wiped validator replays the chain.

    python -m cli.bench.catchup --transactions N        (./scripts/bench --catch-up N)

Starts a fresh localnet (4 PBFT validators by default), commits N transfers, stops the last
validator, deletes its data directory, starts it again and times `ledgerd start` until it is at the
others' height. Block sync checks every block's certificate and every transaction's signature and
re-executes every block, so the figure, replayed transactions per second, is measured against the
one node's ceiling: cores x Ed25519 verifications per second per core. Prints a table and one JSON
line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cli.bench.ceiling import ceiling_tps, share
from cli.bench.cluster import LocalCluster, exit_on_sigterm
from cli.bench.longhaul import load_chain, log, settle
from cli.bench.report import json_line
from cli.bench.setup import BenchError

CATCH_UP_TIMEOUT_S = 3600.0


def catch_up(args: argparse.Namespace, cluster: LocalCluster) -> dict[str, Any]:
    cluster.create()
    cluster.start_all()
    run = load_chain(cluster, args.transactions, args.accounts, fresh=args.fresh_accounts, window=args.window,
                     sample_s=args.sample_s, samples_path=None)
    del run["samples"]
    height = settle(cluster)
    chain_txs = run["committed"] + args.accounts  # the stream's and the funding transfers
    last = cluster.validators - 1
    log(f"stopping node {last}, wiping its data, starting it again ...")
    cluster.stop(last)
    cluster.wipe(last)
    started = cluster.start(last)
    serving, caught_up, reached_height = cluster.wait_caught_up(last, CATCH_UP_TIMEOUT_S)
    took = caught_up - started
    tps = chain_txs / took if took > 0 else 0.0
    ceiling = ceiling_tps(run["verify_per_s_per_core"], run["cores"], args.consensus, cluster.validators,
                          catch_up=True)
    reached = share(tps, ceiling)
    return {**run, "mode": "catch-up", "consensus": args.consensus, "validators": cluster.validators,
            "fresh_accounts": args.fresh_accounts, "height": height, "caught_up_height": reached_height,
            "chain_txs": chain_txs, "catch_up_serving_s": round(serving - started, 2),
            "catch_up_s": round(took, 2), "catch_up_tps": round(tps, 1), "ceiling_tps": round(ceiling, 1),
            "share_of_ceiling": None if reached is None else round(reached, 3)}


def table(r: dict[str, Any]) -> str:
    reached = "-" if r["share_of_ceiling"] is None else f"{100 * r['share_of_ceiling']:.1f}%"
    rows = [
        ("setup", f"{r['validators']} {r['consensus']} validators, one wiped and restarted"),
        ("chain: height / transactions", f"{r['height']} / {r['chain_txs']}"),
        ("load: committed tx/s", str(r["committed_tps"])),
        ("restart until GET /v1/status answers (s)", str(r["catch_up_serving_s"])),
        ("restart until at the others' height (s)", str(r["catch_up_s"])),
        ("replayed tx/s", str(r["catch_up_tps"])),
        ("ceiling tx/s (share reached)", f"{r['ceiling_tps']} ({reached})"),
        ("Ed25519 verify/s per core x cores", f"{r['verify_per_s_per_core']} x {r['cores']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.bench.catchup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, required=True, metavar="N", help="transfers to commit first")
    parser.add_argument("--validators", type=int, default=4, metavar="V", help="validators (default 4)")
    parser.add_argument("--consensus", choices=("pbft", "raft"), default="pbft")
    parser.add_argument("--accounts", type=int, default=200, metavar="K", help="sender accounts (default 200)")
    parser.add_argument("--fresh-accounts", action="store_true", help="each transfer to a fresh account")
    parser.add_argument("--base-port", type=int, default=18001, metavar="P", help="node0's port (default 18001)")
    parser.add_argument("--window", type=int, default=4000, metavar="W",
                        help="most transactions accepted and not yet committed (default 4000)")
    parser.add_argument("--sample-s", type=float, default=5.0, metavar="S", help="seconds between progress lines")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    for name in ("transactions", "accounts", "window"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.validators < 2:
        parser.error("--validators must be at least 2: one is wiped, the others hold the chain")
    root = Path(tempfile.mkdtemp(prefix="ledgerd-catchup."))
    cluster = LocalCluster(root, args.validators, args.consensus, args.base_port)
    try:
        result = catch_up(args, cluster)
    except BenchError as exc:
        raise SystemExit(f"catch-up: {exc}") from None
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    print(table(result))
    print(json_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
