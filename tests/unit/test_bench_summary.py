"""The benchmark sweep's summary: every run, medians per target setup, validator counts, Raft against
etcd round by round, curve rows sorted by offered load, and where the sweep ran."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli.bench.plot import main, summary
from cli.bench.sweep import cpu_ms_per_tx_per_validator, half_rate, label, provenance

ROOT = Path(__file__).resolve().parents[2]


def row(setup: str, tps: float, p99: float, offered: float = 0, cpu: float = 50.0, validators: int = 4,
        cpu_ms: float | None = None, round_: int | None = None) -> dict[str, object]:
    return {"setup": setup, "committed_tps": tps, "offered_tps": offered, "latency_ms_p50": p99 / 4,
            "node_cpu_ms_per_tx": 1000 / tps if cpu_ms is None else cpu_ms, "validators": validators,
            "latency_ms_p95": p99 / 2, "latency_ms_p99": p99, "dropped": 0, "round": round_,
            "nodes": [{"cpu_percent": cpu, "peak_rss_mb": 100.0}, {"cpu_percent": cpu + 10, "peak_rss_mb": 120.0}]}


def section(text: str, title: str) -> list[str]:
    part = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return [li for li in part.splitlines() if li.startswith("|")]


def test_target_setups_show_the_median_of_their_runs_and_every_run() -> None:
    text = summary([row("pbft4-max", 2100.0, 900), row("pbft4-max", 1900.0, 1100), row("pbft4-max", 2300.0, 950),
                    row("pbft4-curve", 990.0, 200, offered=1000), row("pbft4-curve", 250.0, 80, offered=250)])
    line = next(li for li in section(text, "Target setups") if li.startswith("| pbft4-max "))
    assert "**2100** (2100, 1900, 2300)" in line
    assert "| 950 |" in line  # the median p99, not the mean
    # median node CPU (%, ms per tx, ms per tx per validator), highest peak RSS
    assert line.endswith("| 55 | 0.476 | 0.119 | 120 |")
    curve = section(text, "Throughput and latency")[2:]
    assert [c.split("|")[2].strip() for c in curve] == ["250", "1000"]
    assert not any("curve" in li for li in section(text, "Target setups"))


def test_every_run_is_listed_with_its_p99_and_cpu_in_the_order_it_ran() -> None:
    rows = [row("pbft4-max", 2100.0, 900, round_=1), row("pbft4-max", 1900.0, 1100, cpu_ms=0.526, round_=2),
            row("raft3-curve", 500.0, 80, offered=500)]
    runs = section(summary(rows), "Every run")[2:]
    assert [[cell.strip() for cell in r.split("|")[2:4]] for r in runs] == [
        ["1", "pbft4-max"], ["2", "pbft4-max"], ["-", "raft3-curve"]]
    assert "| 1100 | 0.526 | 0.1315 |" in runs[1]  # p99, node CPU ms per tx, the same per validator
    assert "share of ceiling" not in summary(rows)


def test_the_ceiling_share_is_shown_once_the_runs_report_it() -> None:
    with_share = {**row("pbft4-max", 2100.0, 900), "share_of_ceiling": 0.62}
    text = summary([with_share, row("pbft4-max", 1900.0, 1000)])
    assert section(text, "Every run")[2].endswith("| 0.62 |")
    assert section(text, "Every run")[3].endswith("| - |")
    assert section(text, "Target setups")[2].endswith("| 0.62 |")  # the median of the runs that have it


def test_validator_counts_compare_cpu_per_transaction_per_validator_against_four() -> None:
    rows = [row("pbft4-max", 2000.0, 900, validators=4, cpu_ms=0.8), row("pbft4-max", 2000.0, 900, cpu_ms=1.0),
            row("pbft7-max", 1200.0, 900, validators=7, cpu_ms=1.75),
            row("pbft10-max", 800.0, 900, validators=10, cpu_ms=3.0), row("pbft1-max", 6000.0, 400, validators=1)]
    text = summary(rows)
    table = section(text, "Validator count")
    assert [li.split("|")[1].strip() for li in table[2:]] == ["4", "7", "10"]  # one validator is not a consortium
    assert "| 0.225 | 1.00x |" in table[2] and "| 0.25 | 1.11x |" in table[3] and "| 0.3 | 1.33x |" in table[4]
    assert "10 validators against 4: **1.33x** (target: at most 1.5x; met)" in text
    slow = summary([*rows[:3], row("pbft10-max", 500.0, 900, validators=10, cpu_ms=4.0)])
    assert "**1.78x** (target: at most 1.5x; not met)" in slow


def test_raft_and_etcd_are_paired_by_round() -> None:
    etcd = [{"setup": "etcd3-check-perf-xl", "writes_per_s": w, "round": n, "etcd_version": "3.4.23"}
            for n, w in ((1, 1500.0), (2, 2000.0))]
    rows = [row("raft3-max", 3300.0, 900, validators=3, round_=1), etcd[0],
            row("raft3-max", 3000.0, 900, validators=3, round_=2), etcd[1]]
    text = summary(rows)
    assert section(text, "3 Raft nodes and etcd")[2:] == ["| 1 | 3300 | 1500 | 2.20x |", "| 2 | 3000 | 2000 | 1.50x |"]
    assert "median ratio **1.85x** (target: at least 2x; not met)" in text
    assert "| etcd3-check-perf-xl | - | 1500 writes/s |" in section(text, "Every run")[3]
    assert not any("etcd" in li for li in section(text, "Target setups"))
    # a failed Raft run leaves its round without a ratio instead of pairing the wrong runs
    gap = summary([rows[1], *rows[2:]])
    assert "| 1 | - | 1500 | - |" in gap and "median ratio **1.50x**" in gap
    late = [{**r, "round": 10 if r["round"] == 1 else r["round"]} for r in rows]  # rounds in number order
    assert [li.split("|")[1].strip() for li in section(summary(late), "3 Raft nodes and etcd")[2:]] == ["2", "10"]


def test_cpu_per_validator_counts_only_the_validators_that_ran() -> None:
    assert cpu_ms_per_tx_per_validator({"node_cpu_ms_per_tx": 0.9, "validators": 4, "validators_down": 1}) == 0.3
    assert cpu_ms_per_tx_per_validator({"node_cpu_ms_per_tx": None, "validators": 4}) is None
    assert cpu_ms_per_tx_per_validator({"node_cpu_ms_per_tx": 0.9}) is None


def test_label_adds_setup_round_run_and_the_derived_figure() -> None:
    labelled = label('{"committed_tps": 10.0, "node_cpu_ms_per_tx": 1.4, "validators": 7}', "pbft7-max", 2, 9)
    assert (labelled["setup"], labelled["round"], labelled["run"]) == ("pbft7-max", 2, 9)
    assert labelled["cpu_ms_per_tx_per_validator"] == 0.2
    assert "cpu_ms_per_tx_per_validator" not in label('{"writes_per_s": 2500.0}', "etcd3-check-perf-xl", 1, 3)
    with pytest.raises(ValueError, match="not JSON"):
        label("bench failed: connection refused", "pbft4-max", 1, 1)


def test_provenance_names_the_commit_and_the_machine() -> None:
    meta = provenance(ROOT, ["--quick"])
    assert meta["commit"] is None or len(meta["commit"]) == 40  # None only outside a git checkout
    assert isinstance(meta["cores"], int) and len(meta["load_avg_start"]) == 3
    text = summary([row("pbft4-max", 2000.0, 900)], {**meta, "commit": "ab" * 20, "dirty": True})
    assert f"commit `{'ab' * 20}` (with uncommitted changes" in text
    assert "not comparable" in text  # a --quick sweep says so
    assert "(clean tree)" in summary([], {**meta, "dirty": False, "arguments": []})


def test_changes_in_the_output_directory_do_not_make_the_tree_dirty(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "results.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    (tmp_path / "docs" / "bench" / "results.jsonl").write_text("{}\n{}\n")  # a previous sweep's output
    meta = provenance(tmp_path, [], tmp_path / "docs" / "bench")
    assert (meta["dirty"], len(meta["commit"])) == (False, 40)
    assert provenance(tmp_path, [])["dirty"] is True  # without the exclusion it counts
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance(tmp_path, [], tmp_path / "docs" / "bench")["dirty"] is True


def test_the_directory_command_writes_the_summary(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text(json.dumps(row("pbft4-max", 2000.0, 900)) + "\n")
    (tmp_path / "sweep.json").write_text(json.dumps({"commit": "cd" * 20, "dirty": False, "arguments": []}))
    assert main([str(tmp_path)]) == 0  # no curve or validator-count runs: nothing to draw, still a summary
    text = (tmp_path / "summary.md").read_text()
    assert f"commit `{'cd' * 20}` (clean tree)" in text and "| pbft4-max | 1 |" in text
    assert not (tmp_path / "throughput-latency.png").exists()
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "missing")])


def test_catch_up_runs_get_their_own_table_and_stay_out_of_the_target_medians() -> None:
    catch = [{"setup": "pbft4-catch-up", "mode": "catch-up", "round": r, "validators": 4, "chain_txs": 60200,
              "committed_tps": 900.0, "catch_up_serving_s": 1.5, "catch_up_s": s, "catch_up_tps": tps,
              "ceiling_tps": 48000.0, "share_of_ceiling": share}
             for r, s, tps, share in ((1, 6.0, 10033.3, 0.209), (2, 3.0, 20066.7, 0.418), (3, 4.0, 15050.0, 0.314))]
    text = summary([row("pbft4-max", 2100.0, 900), *catch])
    assert not any("catch-up" in li for li in section(text, "Target setups"))
    table = section(text, "Catch-up")
    assert len(table) == 2 + 3 and table[3].endswith("| 20066.7 | 48000 | 0.418 |")
    assert "median **15050 tx/s**, 31.4% of its ceiling (target: at least 60%; not met)" in text
    assert "15050 replayed" in section(text, "Every run")[5]


def test_half_the_maximum_gets_its_p99_against_the_target() -> None:
    rows = [row("pbft4-max", 6000.0, 1000, round_=1),
            *(row("pbft4-halfmax", 2990.0, p99, offered=3000, round_=n)
              for n, p99 in ((1, 240.0), (2, 260.0), (3, 230.0)))]
    text = summary(rows)
    assert section(text, "p99 at half the maximum")[2:] == [
        "| 1 | 3000 | 2990 | 60 | 240 |", "| 2 | 3000 | 2990 | 65 | 260 |", "| 3 | 3000 | 2990 | 57.5 | 230 |"]
    assert "p99 median **240 ms** (target: at most 250 ms; met)" in text
    slow = summary([{**r, "latency_ms_p99": 300.0} for r in rows])
    assert "p99 median **300 ms** (target: at most 250 ms; not met)" in slow
    assert "p99 at half the maximum" not in summary(rows[:1])


def test_half_rate_is_half_the_median_of_one_setups_runs() -> None:
    lines = [json.dumps(r) for r in (row("pbft4-max", 5461.5, 900), row("raft3-max", 10000.0, 900),
                                     row("pbft4-max", 4998.7, 900), row("pbft4-max", 4806.0, 900))]
    assert half_rate([*lines, ""], "pbft4-max") == 2499
    assert half_rate(lines, "pbft7-max") is None
