"""A 4-validator cluster of real `ledgerd start` processes on 127.0.0.1, and faults against it.

One cluster per consensus engine (module scope: starting four Python processes is the slow part),
made by `ledgerd testnet --base-port P` with P chosen so that P..P+3 and P+1000..P+1003 are free.
The tests run in order against it, each leaving it whole again:

1. transactions sent to different nodes all commit, and every node agrees (a transfer sent to
   node2 is visible on node0);
2. `kill -9` of the current proposer (PBFT) or leader (Raft) mid-load: the other three keep
   committing; restarted, it catches up by block sync;
3. SIGSTOP of one node for 10 s: the others keep committing; after SIGCONT it catches up;
4. a node whose data directory is wiped resyncs every block from its peers, to identical hashes.

After every test: all nodes reach the same height with identical block hashes at every height,
every transaction acknowledged as committed is on the chain exactly once (and no transaction is
there twice), and the total LDG over the known accounts is what genesis allocated, on every node.

Every child is killed by PID in a finally, whatever happens; waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from openapi_schema_validator import OAS31Validator

from cli.client import ClientError, LedgerClient, RequestFailed
from consensus.factory import ENGINES
from ledger import keys
from ledger.tx import Transfer, sign_tx
from tests.helpers import ports

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
N = 4
ACCOUNTS = 8
CHAIN = "ledger-local"
START_TIMEOUT_S = 40.0
CATCH_UP_TIMEOUT_S = 60.0
POLL_S = 0.1
# Faster peer heads and sync decisions than the defaults, so that faults heal quickly.
NODE_ENV = {"LEDGERD_STATUS_INTERVAL_S": "0.5", "LEDGERD_SYNC_LAG_GRACE_S": "1.0",
            "LEDGERD_LOG_LEVEL": "info"}

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")


def _engine_param(kind: str) -> Any:
    if kind in ENGINES:
        return pytest.param(kind, id=kind)
    return pytest.param(kind, id=kind, marks=pytest.mark.skip(
        reason=f"the {kind} engine is not registered in consensus.factory.ENGINES yet"))


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    return ports.wait_for(predicate, timeout_s, what, POLL_S)


def free_base_port() -> int:
    return ports.free_base_port(N)


class Cluster:
    """The processes of one testnet, by node index; every PID ever started is remembered."""

    def __init__(self, root: Path, consensus: str) -> None:
        self.root = root
        self.consensus = consensus
        self.base = free_base_port()
        result = subprocess.run(
            [*CLI, "testnet", "--validators", str(N), "--out", str(root / "net"), "--consensus", consensus,
             "--accounts", str(ACCOUNTS), "--base-port", str(self.base)],
            capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        self.homes = [root / "net" / f"node{k}" for k in range(N)]
        self.urls = [f"http://127.0.0.1:{self.base + k}" for k in range(N)]
        index = json.loads((root / "net" / "accounts" / "index.json").read_text())
        self.accounts = [keys.PrivateKey.load(root / "net" / "accounts" / entry["key_file"]) for entry in index]
        self.supply = sum(entry["balance"]["LDG"] for entry in index)
        self.node_ids = [keys.PrivateKey.load(home / "node_key.pem").address for home in self.homes]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: list[subprocess.Popen[bytes]] = []  # every child ever started, for reap()
        self.stopped: set[int] = set()  # SIGSTOPped right now
        self.verified: dict[int, list[str]] = {k: [] for k in range(N)}  # block hashes already compared
        self.acked: dict[str, int] = {}  # tx hash -> height, acknowledged as committed
        self.reference: list[str] = []  # node0's block hashes, checked to link up
        self.tx_counts: Counter[str] = Counter()  # tx hash -> times on the reference chain

    # --- processes ------------------------------------------------------------------------------

    def start(self, k: int) -> None:
        log = (self.homes[k] / "node.log").open("ab")
        try:
            proc = subprocess.Popen([*CLI, "start", "--home", str(self.homes[k])], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **NODE_ENV})
        finally:
            log.close()
        self.procs[k] = proc
        self.started.append(proc)

    def wait_ready(self, k: int) -> None:
        def up() -> bool:
            code = self.procs[k].poll()
            if code is not None:
                raise AssertionError(f"node{k} exited with {code}:\n{self.log_tail(k)}")
            try:
                self.client(k, 1.0).health()
            except ClientError:
                return False
            return True

        wait_for(up, START_TIMEOUT_S, f"node{k} to answer")

    def kill(self, k: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[k]
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)

    def pause(self, k: int) -> None:
        os.kill(self.procs[k].pid, signal.SIGSTOP)
        self.stopped.add(k)

    def resume(self, k: int) -> None:
        os.kill(self.procs[k].pid, signal.SIGCONT)
        self.stopped.discard(k)

    def reap(self) -> None:
        """SIGKILL every child still running, by PID. Only children not yet waited for: their PIDs
        cannot have been reused by another process."""
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process must not linger
                    os.kill(proc.pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def log_tail(self, k: int, lines: int = 30) -> str:
        try:
            return "\n".join((self.homes[k] / "node.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- REST -----------------------------------------------------------------------------------

    def client(self, k: int, timeout_s: float = 5.0) -> LedgerClient:
        return LedgerClient(self.urls[k], timeout_s=timeout_s)

    def status(self, k: int) -> dict[str, Any]:
        return self.client(k).status()

    def height(self, k: int) -> int:
        return int(self.status(k)["height"])

    def heights(self, nodes: list[int] | None = None) -> list[int]:
        return [self.height(k) for k in (range(N) if nodes is None else nodes)]

    def block(self, k: int, height: int) -> dict[str, Any]:
        result: dict[str, Any] = self.client(k).request("GET", f"/v1/blocks/{height}")
        return result

    def leader(self) -> int:
        """The index of the node that proposes next: the PBFT proposer or the Raft leader."""
        def find() -> int | None:
            for k in range(N):
                if k in self.stopped:
                    continue
                engine = self.status(k)["engine"]
                who = engine.get("proposer") if self.consensus == "pbft" else engine.get("leader")
                if who in self.node_ids:
                    return self.node_ids.index(who) + 1  # +1: node0 is a valid answer
            return None

        return wait_for(find, 20, "a known proposer or leader") - 1


class Load:
    """One thread per funded account, each sending transfers one at a time with ?wait=commit and
    retrying the same transaction on the next node after any failure; `targets` says which nodes
    may be used (a test removes a node before it faults it)."""

    def __init__(self, cluster: Cluster, targets: list[int]) -> None:
        self.cluster = cluster
        self.targets = list(targets)
        self.stop_flag = threading.Event()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.committed = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
                        for i in range(len(cluster.accounts))]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a load thread did not stop"

    def _run(self, i: int) -> None:
        cluster = self.cluster
        sender = cluster.accounts[i]
        rng = random.Random(i)
        attempt = rng.randrange(N)
        nonce: int | None = None
        while not self.stop_flag.is_set():
            targets = list(self.targets)
            k = targets[attempt % len(targets)]
            attempt += 1
            try:
                if nonce is None:
                    nonce = int(cluster.client(k, 3.0).account(sender.address)["nonce"])
                to = cluster.accounts[rng.randrange(len(cluster.accounts))]
                tx = sign_tx(sender, CHAIN, nonce, Transfer(to.address, "LDG", 1 + rng.randrange(9)))
                self._send_until_committed(tx.to_json(), tx.hash, k)
                nonce += 1
            except ClientError as exc:
                with self.lock:
                    self.errors.append(f"node{k}: {exc}")

    def _send_until_committed(self, tx: dict[str, Any], tx_hash: str, first: int) -> None:
        k = first
        while True:
            try:
                answer = self.cluster.client(k, 3.0).submit(tx, wait=True, wait_timeout_s=8.0)
            except RequestFailed as exc:
                if exc.code in ("nonce_used",):
                    raise  # another transaction took this nonce: a bug this test must report
                answer = None
            except ClientError:
                answer = None
            if answer is not None and answer.get("status") == "committed":
                with self.lock:
                    self.cluster.acked[tx_hash] = int(answer["height"])
                    self.committed += 1
                return
            if answer is not None and answer.get("status") == "failed":
                raise AssertionError(f"a funded transfer failed: {answer}")
            if self.stop_flag.is_set():
                return  # unacknowledged: it may or may not commit, which the checks allow
            targets = list(self.targets)
            k = targets[(targets.index(k) + 1) % len(targets)] if k in targets else targets[0]


# --- invariants -----------------------------------------------------------------------------------


def check_invariants(cluster: Cluster, catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S) -> int:
    """Every node at one height, identical hashes, acked transactions once, supply unchanged."""
    def converged() -> int | None:
        heights = cluster.heights()
        return heights[0] if len(set(heights)) == 1 and heights[0] > 0 else None

    try:
        height = wait_for(converged, catch_up_timeout_s, "every node to reach the same height")
    except AssertionError:
        fields = ("height", "syncing", "sync_target_height", "blocks_behind", "peers")
        statuses = [{name: cluster.status(k).get(name) for name in fields} for k in range(N)]
        raise AssertionError(f"nodes did not converge: {statuses}") from None

    # Identical block hashes at every height, on every node; the chain links up. Blocks compared by
    # an earlier check are not fetched again (the reference chain grows; a wiped node starts over).
    reference = cluster.reference
    if reference:
        assert cluster.block(0, len(reference))["hash"] == reference[-1], "node0 changed its chain"
    for h in range(len(reference) + 1, height + 1):
        block = cluster.block(0, h)
        if reference:
            assert block["header"]["prev_hash"] == reference[-1], f"block {h} does not link to block {h - 1}"
        reference.append(block["hash"])
        cluster.tx_counts.update(r["hash"] for r in block["receipts"])
    for k in range(N):
        seen = cluster.verified[k]
        assert seen == reference[:len(seen)], f"node{k} changed a block it had"
        for h in range(len(seen) + 1, height + 1):
            got = cluster.block(k, h)["hash"] if k else reference[h - 1]
            assert got == reference[h - 1], f"node{k} has another block at height {h}"
            seen.append(got)
    tx_counts = cluster.tx_counts

    duplicated = [tx for tx, count in tx_counts.items() if count != 1]
    assert not duplicated, f"transactions on the chain more than once: {duplicated[:5]}"
    missing = [tx for tx in cluster.acked if tx not in tx_counts]
    assert not missing, f"acknowledged transactions missing from the chain: {missing[:5]}"

    for k in range(N):
        total = sum(int(cluster.client(k).account(a.address)["balances"].get("LDG", 0))
                    for a in cluster.accounts)
        assert total == cluster.supply, f"node{k}: total LDG {total} != genesis {cluster.supply}"
    return height


def wait_commits(cluster: Cluster, nodes: list[int], blocks: int, timeout_s: float, what: str) -> None:
    """Wait until each of `nodes` has committed `blocks` more blocks than now."""
    start = cluster.heights(nodes)
    wait_for(lambda: all(h >= s + blocks for h, s in zip(cluster.heights(nodes), start, strict=True)),
             timeout_s, what)


# --- the cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[_engine_param("pbft"), _engine_param("raft")])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp(f"cluster-{request.param}"), request.param)
    try:
        for k in range(N):
            c.start(k)
        for k in range(N):
            c.wait_ready(k)
        wait_for(lambda: all(sum(p["connected"] for p in c.status(k)["peers"]) == N - 1 for k in range(N)),
                 START_TIMEOUT_S, "every node to connect to every other")
        yield c
    finally:
        c.reap()


def test_transactions_sent_to_different_nodes_all_commit_and_nodes_agree(cluster: Cluster) -> None:
    alice, bob = cluster.accounts[0], cluster.accounts[1]
    before = int(cluster.client(0).account(bob.address)["balances"]["LDG"])
    # A transfer sent to node2 is visible on node0.
    tx = sign_tx(alice, CHAIN, 0, Transfer(bob.address, "LDG", 25))
    answer = cluster.client(2).submit(tx.to_json(), wait=True, wait_timeout_s=20)
    assert answer["status"] == "committed", answer
    cluster.acked[tx.hash] = answer["height"]
    wait_for(lambda: cluster.height(0) >= answer["height"], 20, "node0 to commit the transfer")
    assert int(cluster.client(0).account(bob.address)["balances"]["LDG"]) == before + 25
    assert cluster.client(0).transaction(tx.hash)["status"] == "committed"

    # One transaction per node, from four senders, all pending at once: every one commits.
    sent = []
    for k in range(N):
        sender = cluster.accounts[2 + k]
        t = sign_tx(sender, CHAIN, 0, Transfer(cluster.accounts[(3 + k) % ACCOUNTS].address, "LDG", 1 + k))
        assert cluster.client(k).submit(t.to_json())["status"] == "pending"
        sent.append(t.hash)
    for tx_hash in sent:
        for k in range(N):
            def committed(k: int = k, tx_hash: str = tx_hash) -> dict[str, Any] | None:
                status = cluster.client(k).transaction(tx_hash) if cluster.height(k) else None
                return status if status and status["status"] == "committed" else None

            status = wait_for(committed, 30, f"{tx_hash[:12]} to commit on node{k}")
            cluster.acked[tx_hash] = status["height"]
    status = cluster.status(1)
    assert status["syncing"] is False and status["blocks_behind"] == 0
    assert all(p["connected"] for p in status["peers"])
    doc = cluster.client(1).request("GET", "/openapi.json")
    schema = {**doc["paths"]["/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
              "components": doc["components"]}
    OAS31Validator(schema).validate(status)  # the cluster fields are documented as they are served
    with urllib.request.urlopen(cluster.urls[1] + "/metrics", timeout=5) as resp:  # noqa: S310
        metrics = resp.read().decode()
    assert f"ledgerd_peers_connected {float(N - 1)}" in metrics
    assert 'ledgerd_p2p_events_total{event="handshake_ok"}' in metrics
    check_invariants(cluster)


def test_kill_9_of_the_proposer_mid_load_and_restart(cluster: Cluster) -> None:
    with Load(cluster, list(range(N))) as load:
        wait_for(lambda: load.committed >= 8, 30, "the load to commit")
        victim = cluster.leader()
        others = [k for k in range(N) if k != victim]
        load.targets = others
        cluster.kill(victim)
        wait_commits(cluster, others, 3, 45, f"the others to commit without node{victim}")
        cluster.start(victim)
        cluster.wait_ready(victim)
        load.targets = list(range(N))
        wait_for(lambda: cluster.height(victim) >= min(cluster.heights(others)), 45,
                 f"node{victim} to catch up after its restart")
        committed = load.committed
        wait_for(lambda: load.committed >= committed + 4, 30, "the load to keep committing")
    check_invariants(cluster)
    # The survivors' engines noticed the dead proposer or leader, and /metrics says so (under Raft
    # only the candidates count an election, so the survivors are summed).
    event = "round_timeouts" if cluster.consensus == "pbft" else "elections_started"
    total = 0.0
    for k in others:
        with urllib.request.urlopen(cluster.urls[k] + "/metrics", timeout=5) as resp:  # noqa: S310
            for line in resp.read().decode().splitlines():
                if line.startswith(f'ledgerd_engine_events_total{{event="{event}"}}'):
                    total += float(line.split()[-1])
    assert total > 0, f"no {event} in the survivors' metrics"


def test_sigstop_for_10_seconds_then_sigcont(cluster: Cluster) -> None:
    with Load(cluster, list(range(N))) as load:
        wait_for(lambda: load.committed >= 4, 30, "the load to commit")
        victim = cluster.leader()
        others = [k for k in range(N) if k != victim]
        load.targets = others
        cluster.pause(victim)
        paused_at = time.monotonic()
        try:
            wait_commits(cluster, others, 3, 10, f"the others to commit while node{victim} is stopped")
            time.sleep(max(0.0, 10.0 - (time.monotonic() - paused_at)))  # the fault itself lasts 10 s
        finally:
            cluster.resume(victim)
        wait_for(lambda: cluster.height(victim) >= min(cluster.heights(others)), 45,
                 f"node{victim} to catch up after SIGCONT")
        load.targets = list(range(N))
        committed = load.committed
        wait_for(lambda: load.committed >= committed + 4, 30, "the load to keep committing")
    check_invariants(cluster)


def test_wiped_data_directory_resyncs_from_peers(cluster: Cluster) -> None:
    victim = 3
    others = [k for k in range(N) if k != victim]
    with Load(cluster, others) as load:
        wait_for(lambda: load.committed >= 4, 30, "the load to commit")
        cluster.kill(victim, signal.SIGTERM)
        shutil.rmtree(cluster.homes[victim] / "data")
        cluster.verified[victim] = []
        cluster.start(victim)
        cluster.wait_ready(victim)
        wait_for(lambda: cluster.height(victim) >= min(cluster.heights(others)), 45,
                 f"node{victim} to resync from an empty data directory")
    check_invariants(cluster)
    with urllib.request.urlopen(cluster.urls[victim] + "/metrics", timeout=5) as resp:  # noqa: S310
        metrics = resp.read().decode()
    applied = [line for line in metrics.splitlines()
               if line.startswith('ledgerd_sync_events_total{event="blocks_applied"}')]
    assert applied and float(applied[0].split()[-1]) > 0, "the wiped node did not use block sync"
