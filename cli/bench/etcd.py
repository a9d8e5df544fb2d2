"""scripts/bench-etcd's figure: the output of `etcdctl check perf` turned into one JSON line.

    python -m cli.bench.etcd LOG EXIT_STATUS ETCD_VERSION MEMBERS

check perf prints `PASS: Throughput is N writes/s` or `FAIL: Throughput too low: N writes/s`, then
the slowest request and the standard deviation (each PASS or too long / too high), a line per kind
of failed request (`FAIL: ERROR(reason) -> count`) and PASS or FAIL; it exits non-zero on FAIL.
A FAIL still carries the figure (on two cores the xl load's own target is out of reach), so only a
missing throughput line is an error.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SETUP = "etcd3-check-perf-xl"
THROUGHPUT = re.compile(r"Throughput (?:is|too low:) (\d+(?:\.\d+)?) writes/s")
SLOWEST = re.compile(r"Slowest request took (?:too long: )?(\d+(?:\.\d+)?)s")
STDDEV = re.compile(r"Stddev (?:is|too high:) (\d+(?:\.\d+)?)s")
FAILED = re.compile(r"FAIL: ERROR\(.*\) -> (\d+)")


def parse(text: str, exit_status: int, version: str, members: int) -> dict[str, Any]:
    writes = THROUGHPUT.search(text)
    if writes is None:
        raise ValueError(f"no 'writes/s' figure in the output of etcdctl check perf (exit status {exit_status})")
    slowest, stddev = SLOWEST.search(text), STDDEV.search(text)
    return {"setup": SETUP, "writes_per_s": float(writes.group(1)), "members": members, "etcd_version": version,
            "check_perf_passed": exit_status == 0,
            "failed_requests": sum(int(n) for n in FAILED.findall(text)),
            "slowest_request_s": float(slowest.group(1)) if slowest else None,
            "stddev_s": float(stddev.group(1)) if stddev else None}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or not argv[1].lstrip("-").isdigit() or not argv[3].isdigit():
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    log = Path(argv[0])
    try:
        row = parse(log.read_text(errors="replace"), int(argv[1]), argv[2], int(argv[3]))
    except (OSError, ValueError) as exc:
        print(f"scripts/bench-etcd: {exc}; see {log}", file=sys.stderr)
        return 1
    print(f"etcd {row['etcd_version']}, {row['members']} members: {row['writes_per_s']:g} writes/s "
          f"(check perf {'passed' if row['check_perf_passed'] else 'failed its own target'}, "
          f"{row['failed_requests']} failed requests)", file=sys.stderr)
    print(json.dumps(row, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
