"""The `ledgerd` console script as a user runs it, in real processes: keys, testnet, start + tx + status
against a single-validator node, clean SIGTERM, kill -9 and restart, localnet. Every process a test
starts is killed by PID in a finally block, whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.keys import PrivateKey
from tests.helpers.ports import free_base_port, wait_for

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def ledgerd(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Reaper:
    """Every process and PID a test starts; `reap()` SIGKILLs whatever is still alive."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for pid in self.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.reap()


class RunningNode:
    def __init__(self, reaper: Reaper, home: Path, log: Path, *extra: str) -> None:
        self.log = log
        offset = len(log.read_text()) if log.exists() else 0
        args = ["start", "--home", str(home), "--rest-port", "0", "--p2p-port", "0", *extra]
        self.proc = reaper.spawn(args, log)

        def url() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the node exited with {self.proc.returncode}:\n{log.read_text()}")
            found = re.search(r"serving (http://\S+)", log.read_text()[offset:])
            return found.group(1) if found else None

        self.url: str = wait_for(url, START_TIMEOUT_S, "the node to announce its URL")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture
def net(tmp_path: Path) -> Path:
    result = ledgerd("testnet", "--validators", "1", "--out", str(tmp_path / "net"), "--accounts", "3")
    assert result.returncode == 0, result.stderr
    return tmp_path / "net"


# --- commands that need no node ----------------------------------------------------------------


def test_keys_new_and_show(tmp_path: Path) -> None:
    path = tmp_path / "alice.pem"
    made = ledgerd("keys", "new", "--out", str(path))
    assert made.returncode == 0, made.stderr
    shown = ledgerd("keys", "show", str(path))
    assert (shown.returncode, shown.stdout.strip()) == (0, made.stdout.strip())
    assert PrivateKey.load(path).address == shown.stdout.strip()
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = ledgerd("keys", "new", "--out", str(path))
    assert again.returncode == 1 and "already exists" in one_line(again.stderr)


def test_usage_errors_exit_2_with_one_line() -> None:
    for args in (["tx", "transfer", "--amount", "-1"], ["nonsense"], ["testnet", "--validators", "x"]):
        result = ledgerd(*args)
        assert result.returncode == 2, args
        assert "error:" in one_line(result.stderr)
    assert ledgerd("--help").returncode == 0


def test_testnet_layout(tmp_path: Path) -> None:
    out = tmp_path / "net"
    result = ledgerd("testnet", "--validators", "3", "--out", str(out), "--accounts", "2",
                     "--consensus", "raft", "--chain-id", "acme-1", "--base-port", "18001")
    assert result.returncode == 0, result.stderr
    geneses = set()
    for k in range(3):
        home = out / f"node{k}"
        assert sorted(p.name for p in home.iterdir()) == ["config.toml", "genesis.json", "node_key.pem"]
        config = (home / "config.toml").read_text()
        assert f"rest_port = {18001 + k}" in config and f"p2p_port = {19001 + k}" in config
        geneses.add((home / "genesis.json").read_text())
    assert len(geneses) == 1
    genesis = json.loads(geneses.pop())
    assert (genesis["chain_id"], genesis["consensus"], len(genesis["validators"])) == ("acme-1", "raft", 3)
    index = json.loads((out / "accounts" / "index.json").read_text())
    assert len(index) == 2
    for entry in index:
        shown = ledgerd("keys", "show", str(out / "accounts" / entry["key_file"]))
        assert shown.stdout.strip() == entry["address"]
    assert {a["address"] for a in genesis["allocations"]} == {e["address"] for e in index}
    again = ledgerd("testnet", "--validators", "1", "--out", str(out))
    assert again.returncode == 1 and "not empty" in one_line(again.stderr)


# --- a running node ---------------------------------------------------------------------------


def tx(node: RunningNode, kind: str, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ledgerd("tx", kind, "--key", str(key), "--node", node.url, "--wait", *args)


def test_start_tx_status_and_sigterm(net: Path, reaper: Reaper) -> None:
    node = RunningNode(reaper, net / "node0", net / "node0.log")
    alice, bob = net / "accounts" / "account0.pem", net / "accounts" / "account1.pem"
    bob_address = ledgerd("keys", "show", str(bob)).stdout.strip()

    sent = tx(node, "transfer", alice, "--to", bob_address, "--amount", "25")
    assert sent.returncode == 0, sent.stderr
    answer = json.loads(sent.stdout)
    assert (answer["status"], answer["result"]) == ("committed", {"code": "ok"})
    assert node.get(f"/v1/transactions/{answer['hash']}")["status"] == "committed"

    issued = tx(node, "issue", alice, "--asset", "GOLD", "--supply", "1000")
    assert issued.returncode == 0, issued.stderr
    again = tx(node, "issue", alice, "--asset", "GOLD", "--supply", "1")
    assert again.returncode == 1 and "asset_exists" in one_line(again.stderr)
    recorded = tx(node, "record", bob, "--record-key", "doc-1", "--value", "sha256:abc")
    assert recorded.returncode == 0, recorded.stderr
    record = node.get(f"/v1/records/{bob_address}/doc-1")
    assert (record["value"], record["tx"]) == ("sha256:abc", json.loads(recorded.stdout)["hash"])

    status = ledgerd("status", "--node", node.url)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["height"] == 3 and shown["chain_id"] == "ledger-local"
    # The lone validator of a chain with a committee listens for peers (the set may grow): its ID=URL
    # is what `ledgerd join --peer` takes.
    peer_arg = ledgerd("status", "--node", node.url, "--peer-arg")
    assert peer_arg.returncode == 0 and peer_arg.stdout.strip() == f"{shown['node_id']}={shown['p2p_url']}"
    # A reader that goes away (`ledgerd status | head -1`) is no error to report.
    with subprocess.Popen([*CLI, "status", "--node", node.url], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as piped:
        assert piped.stdout is not None and piped.stderr is not None
        piped.stdout.close()
        assert piped.wait(timeout=60) in (0, 141) and piped.stderr.read() == ""

    assert node.stop(signal.SIGTERM) == 0
    log = node.log.read_text()
    assert "node stopped" in log and "Traceback" not in log


def test_kill_9_then_restart_keeps_height_head_and_balances(net: Path, reaper: Reaper) -> None:
    node = RunningNode(reaper, net / "node0", net / "node0.log")
    alice = net / "accounts" / "account0.pem"
    bob_address = ledgerd("keys", "show", str(net / "accounts" / "account1.pem")).stdout.strip()
    for amount in (1, 2, 3):
        assert tx(node, "transfer", alice, "--to", bob_address, "--amount", str(amount)).returncode == 0
    before = node.get("/v1/status")
    bob_before = node.get(f"/v1/accounts/{bob_address}")
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL

    node = RunningNode(reaper, net / "node0", net / "node0.log")
    after = node.get("/v1/status")
    assert (after["height"], after["latest_hash"], after["app_hash"]) == \
        (before["height"], before["latest_hash"], before["app_hash"])
    assert node.get(f"/v1/accounts/{bob_address}") == bob_before
    # And the chain goes on from there: the next nonce is fetched from the restarted node.
    assert tx(node, "transfer", alice, "--to", bob_address, "--amount", "4").returncode == 0
    assert node.get("/v1/status")["height"] == before["height"] + 1
    assert node.stop() == 0


def test_a_second_node_on_the_same_home_is_refused(net: Path, reaper: Reaper) -> None:
    node = RunningNode(reaper, net / "node0", net / "node0.log")
    second = ledgerd("start", "--home", str(net / "node0"), "--rest-port", "0", "--p2p-port", "0",
                     timeout=START_TIMEOUT_S)
    assert second.returncode == 1 and "in use by another process" in one_line(second.stderr)
    assert node.get("/healthz")["status"] == "ok"
    assert node.stop() == 0


def test_start_failures_are_one_line_and_exit_1(net: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ledgerd("start", "--home", str(net / "node0"), "--rest-port", str(port), "--p2p-port", "0",
                         timeout=START_TIMEOUT_S)
    assert result.returncode == 1
    assert "cannot serve the REST API" in [line for line in result.stderr.splitlines()
                                           if line.startswith("ledgerd: error:")][0]
    assert "Traceback" not in result.stderr
    (net / "node0" / "config.toml").write_text("rest_port = 'many'\n")
    result = ledgerd("start", "--home", str(net / "node0"))
    assert result.returncode == 1 and "rest_port" in one_line(result.stderr)


# --- localnet -----------------------------------------------------------------------------------




def run_localnet(reaper: Reaper, tmp_path: Path,
                 validators: int) -> tuple[subprocess.Popen[bytes], Path, list[int]]:
    log = tmp_path / f"localnet-{len(reaper.procs)}.log"
    proc = reaper.spawn(["localnet", "--validators", str(validators), "--dir", str(tmp_path / "cluster"),
                         "--base-port", str(free_base_port(validators))], log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"localnet exited with {proc.returncode}:\n{log.read_text()}")
        return "localnet is up" in log.read_text()

    try:
        wait_for(up, START_TIMEOUT_S * 2, "localnet to report every node ready")
    finally:
        pids = [int(p) for p in re.findall(r"node\d+: pid (\d+)", log.read_text())]
        reaper.pids.extend(pids)
    return proc, log, pids


def test_localnet_single_validator_runs_and_stops_cleanly(tmp_path: Path, reaper: Reaper) -> None:
    proc, log, pids = run_localnet(reaper, tmp_path, 1)
    assert len(pids) == 1 and pid_alive(pids[0])
    url = re.search(r"node0  (http://\S+)", log.read_text())
    assert url is not None
    key = tmp_path / "cluster" / "accounts" / "account0.pem"
    to = ledgerd("keys", "show", str(tmp_path / "cluster" / "accounts" / "account1.pem")).stdout.strip()
    sent = ledgerd("tx", "transfer", "--key", str(key), "--to", to, "--amount", "5", "--node", url.group(1),
                   "--wait")
    assert sent.returncode == 0 and json.loads(sent.stdout)["status"] == "committed", sent.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    assert not pid_alive(pids[0])
    assert "stopped 1 node(s)" in log.read_text()

    # A second run reuses the directory: same chain, the height it reached.
    proc, log, pids = run_localnet(reaper, tmp_path, 1)
    assert "created" not in log.read_text()
    with urllib.request.urlopen(url.group(1) + "/v1/status", timeout=10) as resp:
        assert json.loads(resp.read())["height"] >= 1
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    assert not any(pid_alive(p) for p in pids)


def test_localnet_starts_four_validators(tmp_path: Path, reaper: Reaper) -> None:
    proc, log, pids = run_localnet(reaper, tmp_path, 4)
    assert len(pids) == 4 and all(pid_alive(p) for p in pids)
    urls = re.findall(r"node\d  (http://\S+)", log.read_text())
    assert len(urls) == 4

    # One validator dies: localnet says so and how to restart it, and keeps the other three up.
    os.kill(pids[2], signal.SIGKILL)
    wait_for(lambda: "node2 exited" in log.read_text(), STOP_TIMEOUT_S, "localnet to report node2's exit")
    assert "ledgerd start --home" in log.read_text()
    assert proc.poll() is None and all(pid_alive(p) for i, p in enumerate(pids) if i != 2)
    with urllib.request.urlopen(urls[0] + "/healthz", timeout=10) as resp:
        assert resp.status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_TIMEOUT_S) == 0
    assert not any(pid_alive(p) for p in pids)


def test_localnet_killed_hard_leaves_no_node_behind(tmp_path: Path, reaper: Reaper) -> None:
    proc, _, pids = run_localnet(reaper, tmp_path, 1)
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(pid_alive(p) for p in pids), STOP_TIMEOUT_S, "the orphaned node to stop")
