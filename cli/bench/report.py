"""The run's figures: a human table and ONE JSON line (the last line of stdout) for scripts."""

from __future__ import annotations

import json
from typing import Any

from cli.bench.ceiling import share
from cli.bench.load import Counters
from cli.bench.stats import percentile


def figures(c: Counters, *, consensus: str, validators: int, tx_bytes: int, offered_tps: float | None,
            duration_s: float, elapsed_s: float, cpu_cores: int, nodes: list[dict[str, Any]],
            mode: str, validators_down: int = 0, verify_per_s_per_core: float | None = None,
            cores: int | None = None, ceiling_tps: float | None = None,
            fresh_accounts: bool = False) -> dict[str, Any]:
    lat = sorted(c.latencies_s)

    def ms(fraction: float) -> float | None:
        value = percentile(lat, fraction)
        return None if value is None else round(value * 1000, 1)

    # Over the time from the first send to the last commit seen, so a closed-loop run that used up
    # its pre-signed stock early is not diluted by idle seconds.
    window = elapsed_s if c.committed and elapsed_s > 0 else float(duration_s)
    # The cluster's cost per transaction, whatever the throughput: CPU time of every node (with its
    # workers) over the run, per committed transaction. Steadier than tx/s on a noisy machine.
    cpu = [n.get("cpu_s") for n in nodes]
    cpu_known = [float(x) for x in cpu if isinstance(x, int | float)]
    cpu_ms_per_tx = (round(1000 * sum(cpu_known) / c.committed, 3)
                     if cpu and len(cpu_known) == len(cpu) and c.committed else None)
    committed_tps = round(c.committed / window, 1) if window > 0 else 0.0
    reached = share(committed_tps, ceiling_tps) if ceiling_tps is not None else None
    return {
        "mode": mode, "consensus": consensus, "validators": validators, "validators_down": validators_down,
        "tx_bytes": tx_bytes,
        "offered_tps": None if offered_tps is None else round(offered_tps, 1),
        "sent": c.sent, "accepted": c.accepted, "committed": c.committed, "failed": c.failed,
        "dropped": c.dropped, "retried": c.retried, "http_errors": c.http_errors,
        "refusals": dict(sorted(c.refusals.items())),
        "committed_tps": committed_tps, "fresh_accounts": fresh_accounts,
        "latency_ms_p50": ms(0.50), "latency_ms_p95": ms(0.95), "latency_ms_p99": ms(0.99),
        "latency_ms_max": round(lat[-1] * 1000, 1) if lat else None,
        "duration_s": duration_s, "measured_s": round(window, 2), "cpu_cores": cpu_cores,
        "node_cpu_ms_per_tx": cpu_ms_per_tx, "nodes": nodes,
        "verify_per_s_per_core": None if verify_per_s_per_core is None else round(verify_per_s_per_core),
        "cores": cores, "ceiling_tps": None if ceiling_tps is None else round(ceiling_tps, 1),
        "share_of_ceiling": None if reached is None else round(reached, 3),
    }


def table(f: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = [
        ("consensus / validators", f"{f['consensus']} / {f['validators']}"
         + (f" ({f['validators_down']} stopped)" if f.get("validators_down") else "")),
        ("mode", f["mode"] + (", transfers to fresh accounts" if f.get("fresh_accounts") else "")),
        ("offered tx/s", show(f["offered_tps"])),
        ("committed tx/s", show(f["committed_tps"])),
        ("ceiling tx/s (share reached)", "-" if f.get("share_of_ceiling") is None else
         f"{f['ceiling_tps']} ({100 * f['share_of_ceiling']:.1f}%)"),
        ("Ed25519 verify/s per core x cores", f"{show(f.get('verify_per_s_per_core'))} x {show(f.get('cores'))}"),
        ("sent / accepted / committed", f"{f['sent']} / {f['accepted']} / {f['committed']}"),
        ("failed / dropped / retried", f"{f['failed']} / {f['dropped']} / {f['retried']}"),
        ("latency ms p50 / p95 / p99 / max",
         " / ".join(show(f[k]) for k in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                                         "latency_ms_max"))),
        ("tx size (bytes)", show(f["tx_bytes"])),
        ("measured over (s)", show(f["measured_s"])),
        ("client machine cores", show(f["cpu_cores"])),
        ("node CPU per tx (ms, all nodes)", show(f["node_cpu_ms_per_tx"])),
    ]
    for node in f["nodes"]:
        rows.append((f"{node['url']} (pid {show(node['pid'])})",
                     f"cpu {show(node['cpu_percent'])}%  peak rss {show(node['peak_rss_mb'])} MiB"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def json_line(f: dict[str, Any]) -> str:
    return json.dumps(f, separators=(",", ":"), sort_keys=True)
