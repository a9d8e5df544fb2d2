"""kill -9 in the middle of a commit loop: the database reopens at a height whose head hash, block,
receipts, tx index and state all agree (GUIDE section 5: a crash leaves the old height or the new one).

The state check replays every stored block from genesis with the ledger's state machine and compares
the result, key by key, with the stored state, and the replayed app hash with the head's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage import Store
from tests.helpers import commit_loop
from tests.helpers.chain import replay_chain, stored_state

REPO = Path(__file__).resolve().parents[2]


def run_until_killed(db: Path, rng: random.Random) -> int:
    """Start the commit loop, let it commit a random number of blocks, SIGKILL it mid-loop."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.commit_loop", str(db)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first and first[0] == "start", first
        target = rng.randint(3, 25)
        last = int(first[1])
        deadline = time.monotonic() + 60
        while last < int(first[1]) + target:
            assert time.monotonic() < deadline, "commit loop made no progress"
            line = proc.stdout.readline()
            assert line, "commit loop exited early"
            last = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_commit_loop_reopens_consistent(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    db = tmp_path / "db"
    for _round in range(3):
        last_seen = run_until_killed(db, rng)
        store = Store.open(db, commit_loop.GENESIS)
        try:
            # Every height the child reported was synced; at most the one in flight may be extra.
            assert last_seen <= store.tip.height <= last_seen + 1
            state, _ = replay_chain(store, commit_loop.GENESIS)
        finally:
            store.close()
        assert stored_state(db) == state
