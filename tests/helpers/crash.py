"""SIGKILL a child that prints `start H` and then `committed H` lines, at a random moment.

Shared by the crash tests (tests/helpers/commit_loop.py and node_loop.py are the children).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_until_killed(module: str, arg: Path, rng: random.Random, at_least: int, at_most: int) -> int:
    """Run `python -m module arg`, kill -9 it after `at_least..at_most` more commits.

    Answers the highest height the child reported as committed, including lines it printed after
    the one that triggered the kill but before the signal landed: each of those was synced too.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", module, str(arg)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first and first[0] == "start", first
        start = int(first[1])
        target = start + rng.randint(at_least, at_most)
        last = start
        deadline = time.monotonic() + 60
        while last < target:
            assert time.monotonic() < deadline, f"{module} made no progress"
            line = proc.stdout.readline()
            assert line, f"{module} exited early"
            last = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout.read().splitlines():
            if line.startswith("committed "):
                last = int(line.split()[1])
        return last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
