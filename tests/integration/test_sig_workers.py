"""Signature checks in worker processes (`verify_processes`): a node in a subprocess verifies a
batch through its workers (a forged signature in the batch is still refused, the rest admitted),
and its workers never outlive it, whether it stops on SIGTERM or is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cli.bench.stats import family
from node.signatures import VERIFY_INLINE_BELOW
from tests.helpers.chain import resigned
from tests.helpers.nodes import pay, single_node_net, wire
from tests.helpers.ports import wait_for

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
WORKERS = 2


def post(url: str, body: object) -> list[dict[str, object]]:
    request = urllib.request.Request(url + "/v1/transactions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_workers_verify_batches_and_die_with_the_node(tmp_path: Path, stop: signal.Signals) -> None:
    net = single_node_net(tmp_path, accounts=2)
    alice, bob = net.accounts
    log = tmp_path / "node.log"
    env = {**os.environ, "LEDGERD_VERIFY_PROCESSES": str(WORKERS)}
    with log.open("wb") as out:
        node = subprocess.Popen([*CLI, "start", "--home", str(net.home), "--rest-port", "0", "--p2p-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    workers: list[int] = []
    try:
        def serving() -> str | None:
            assert node.poll() is None, log.read_text()
            found = re.search(r"serving (http://\S+)", log.read_text())
            return found.group(1) if found else None

        url = wait_for(serving, 20, "the node to announce its URL")
        # More than node.signatures.VERIFY_INLINE_BELOW signatures: fewer are checked on the node's loop.
        txs = [pay(alice, n, bob) for n in range(VERIFY_INLINE_BELOW + 8)]
        txs[7] = resigned(txs[7], bob)  # same body, signed by someone else
        answers = post(url, wire(*txs))
        codes = [a["status"] if a["status"] == "pending" else a["error"]["code"] for a in answers]  # type: ignore[index]
        assert codes[7] == "invalid_signature"
        assert codes[:7] == ["pending"] * 7
        assert codes[8:] == ["pending"] * (len(txs) - 8)  # held as future nonces behind the refused one
        workers = wait_for(lambda: [p for p in family(node.pid) if p != node.pid and
                                    b"node.sigworkers" in Path(f"/proc/{p}/cmdline").read_bytes()],
                           10, "the signature workers to start")
        assert 1 <= len(workers) <= WORKERS  # started on demand: one batch may need only one
        node.send_signal(stop)
        node.wait(timeout=30)
        if stop == signal.SIGTERM:
            assert node.returncode == 0, log.read_text()
        wait_for(lambda: gone(workers), 10, f"the workers {workers} to exit after the node")
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        for pid in workers:
            if not gone([pid]):
                os.kill(pid, signal.SIGKILL)
