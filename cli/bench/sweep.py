"""scripts/bench-sweep's bookkeeping: where a sweep ran (commit, machine) and one labelled row per run.

    python -m cli.bench.sweep provenance ROOT DIR [SWEEP ARGUMENTS...] > DIR/sweep.json
    python -m cli.bench.sweep label SETUP ROUND RUN < last line of a run  >> DIR/results.jsonl
    python -m cli.bench.sweep half-rate DIR/results.jsonl SETUP   (half the median committed tx/s)

`provenance` is taken once, before the first run: the commit (`git rev-parse HEAD`) and whether the
tree had uncommitted changes (outside DIR, which a sweep with `--out docs/bench` rewrites), the
cores, CPU model and load average of the machine. `label` adds to
a run's JSON line its setup, its round (which repetition of the target setups; null for the curve
points), its number in the sweep and the derived `cpu_ms_per_tx_per_validator`. `half-rate` prints
half the median committed tx/s of a setup's runs so far (nothing when it has none): the open-loop
rate of the p99-at-half-the-maximum runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def cpu_ms_per_tx_per_validator(row: dict[str, Any]) -> float | None:
    """The CPU time of all running nodes per committed transaction, divided by how many were running:
    what one validator spends per transaction, to compare clusters of different sizes."""
    total, validators = row.get("node_cpu_ms_per_tx"), row.get("validators")
    if not isinstance(total, int | float) or not isinstance(validators, int):
        return None
    running = validators - int(row.get("validators_down") or 0)
    return round(float(total) / running, 4) if running > 0 else None


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def provenance(root: Path, arguments: list[str], out: Path | None = None) -> dict[str, Any]:
    pathspec = ["--", "."]
    if out is not None and out.resolve().is_relative_to(root.resolve()) and out.resolve() != root.resolve():
        pathspec.append(f":(exclude){out.resolve().relative_to(root.resolve()).as_posix()}")
    status = _git(root, "status", "--porcelain", *pathspec)
    return {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _git(root, "rev-parse", "HEAD"),
        "commit_short": _git(root, "rev-parse", "--short=10", "HEAD"),
        # Uncommitted changes (tracked or not, outside the output directory) when the sweep
        # started: the figures are then not those of the commit alone. Null when git could not tell.
        "dirty": None if status is None else bool(status),
        "dirty_paths": None if status is None else len(status.splitlines()),
        "arguments": arguments,
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def label(line: str, setup: str, round_: int | None, run: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"the last line of the run is not JSON: {exc}: {line[:200]!r}") from None
    if not isinstance(row, dict):
        raise ValueError(f"the last line of the run is not a JSON object: {line[:200]!r}")
    row.update(setup=setup, round=round_, run=run)
    if "node_cpu_ms_per_tx" in row:
        row["cpu_ms_per_tx_per_validator"] = cpu_ms_per_tx_per_validator(row)
    return row


def half_rate(lines: list[str], setup: str) -> int | None:
    """Half the median committed tx/s of `setup`'s rows among results.jsonl `lines`, None without any."""
    rates = [row["committed_tps"] for row in map(json.loads, filter(str.strip, lines))
             if row.get("setup") == setup and isinstance(row.get("committed_tps"), int | float)]
    return round(statistics.median(rates) / 2) if rates else None


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "provenance":
        print(json.dumps(provenance(Path(argv[1]), argv[3:], Path(argv[2])), indent=2, sort_keys=True))
        return 0
    if len(argv) == 4 and argv[0] == "label":
        setup, round_text, run_text = argv[1:]
        if not (round_text == "-" or round_text.isdigit()) or not run_text.isdigit():
            print("python -m cli.bench.sweep label: ROUND is a number or -, RUN a number", file=sys.stderr)
            return 2
        try:
            row = label(sys.stdin.read().strip(), setup, None if round_text == "-" else int(round_text),
                        int(run_text))
        except ValueError as exc:
            print(f"python -m cli.bench.sweep label: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(row, sort_keys=True))
        return 0
    if len(argv) == 3 and argv[0] == "half-rate":
        rate = half_rate(Path(argv[1]).read_text().splitlines(), argv[2])
        print("" if rate is None else rate)
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
