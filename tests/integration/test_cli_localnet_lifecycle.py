"""localnet's account of its nodes, as a user sees it in real processes: a node that exits can be
brought back under localnet (DIR/nodeK/restart), the "stopped N node(s)" count is the nodes localnet
really stopped, and a node started by hand is named as the user's to stop. Also the REST-port hint of
`ledgerd start`. Every process a test starts is killed by PID in a finally block.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ports import free_base_port, wait_for

pytestmark = pytest.mark.timeout(180)

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
UP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 25.0
PID_LINE = re.compile(r"node0: pid (\d+)")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie counts as dead
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


class Procs:
    """Every process and PID a test starts, SIGKILLed at the end if still alive."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: set[int] = set()

    def spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.cleanup()


class Localnet:
    def __init__(self, procs: Procs, tmp_path: Path) -> None:
        self.procs = procs
        self.dir = tmp_path / "net"
        self.log = tmp_path / "localnet.log"
        self.proc = procs.spawn(["localnet", "--validators", "1", "--dir", str(self.dir), "--accounts", "1",
                                 "--base-port", str(free_base_port(1))], self.log)
        wait_for(lambda: self._running() and "localnet is up" in self.text(), UP_TIMEOUT_S, "localnet to be up")
        found = re.search(r"node0  (http://\S+)", self.text())
        assert found is not None, self.text()
        self.url = found.group(1)

    def _running(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"localnet exited with {self.proc.returncode}:\n{self.text()}")
        return True

    def text(self) -> str:
        return self.log.read_text()

    def node_pids(self) -> list[int]:
        pids = [int(p) for p in PID_LINE.findall(self.text())]
        self.procs.pids.update(pids)
        return pids

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=STOP_TIMEOUT_S * 2) == 0, self.text()
        return self.text()


def kill_node(net: Localnet) -> None:
    pid = net.node_pids()[-1]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "node0 exited" in net.text(), STOP_TIMEOUT_S, "localnet to report node0's exit")


def test_a_node_that_exited_comes_back_under_localnet_on_request(tmp_path: Path, procs: Procs) -> None:
    net = Localnet(procs, tmp_path)
    kill_node(net)
    # The only node is gone, yet localnet stays, says how to bring it back, and who stops what.
    restart = net.dir / "node0" / "restart"
    assert f"touch {restart}" in net.text() and "is yours to" in net.text()
    assert net.proc.poll() is None

    restart.touch()
    wait_for(lambda: len(net.node_pids()) == 2, STOP_TIMEOUT_S, "localnet to restart node0")
    wait_for(net.answers, UP_TIMEOUT_S, "the restarted node0 to answer")
    assert not restart.exists()
    new_pid = net.node_pids()[-1]

    out = net.stop()
    assert "stopped 1 node(s)" in out and "already exited" not in out
    assert not alive(new_pid) and not net.answers()


def test_a_running_node_is_restarted_on_request(tmp_path: Path, procs: Procs) -> None:
    net = Localnet(procs, tmp_path)
    old_pid = net.node_pids()[0]
    (net.dir / "node0" / "restart").touch()
    wait_for(lambda: len(net.node_pids()) == 2, STOP_TIMEOUT_S, "localnet to restart node0")
    assert not alive(old_pid)
    wait_for(net.answers, UP_TIMEOUT_S, "the restarted node0 to answer")
    assert "stopped 1 node(s)" in net.stop()


def test_the_stop_count_is_the_nodes_really_stopped_and_a_node_started_by_hand_is_named(
        tmp_path: Path, procs: Procs) -> None:
    net = Localnet(procs, tmp_path)
    kill_node(net)
    by_hand = procs.spawn(["start", "--home", str(net.dir / "node0")], tmp_path / "by-hand.log")
    wait_for(net.answers, UP_TIMEOUT_S, "the node started by hand to answer")

    out = net.stop()
    assert "stopped 0 node(s); node0 had already exited" in out
    assert re.search(r"node0 at http://\S+ still answers: .*started by hand", out), out
    # localnet did not touch it: it is the user's, as the message says.
    assert by_hand.poll() is None and net.answers()
    by_hand.send_signal(signal.SIGTERM)
    assert by_hand.wait(timeout=STOP_TIMEOUT_S) == 0


def test_a_taken_rest_port_suggests_rest_port(tmp_path: Path) -> None:
    out = tmp_path / "net"
    made = subprocess.run([*CLI, "testnet", "--validators", "1", "--accounts", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*CLI, "start", "--home", str(out / "node0"), "--rest-port", str(port),
                                 "--p2p-port", "0"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("ledgerd: error:")]
    assert len(error) == 1 and f":{port}" in error[0] and "--rest-port" in error[0], result.stderr


def test_a_restart_that_cannot_start_is_reported_and_localnet_stays(tmp_path: Path, procs: Procs) -> None:
    net = Localnet(procs, tmp_path)
    kill_node(net)
    (net.dir / "node0" / "config.toml").write_text("rest_port = 'many'\n")
    (net.dir / "node0" / "restart").touch()
    wait_for(lambda: "cannot restart node0" in net.text(), STOP_TIMEOUT_S, "localnet to report the failed restart")
    assert "rest_port" in net.text() and net.proc.poll() is None
    assert "stopped 0 node(s); node0 had already exited" in net.stop()
