"""A throwaway localnet for the long benchmarks: write a testnet into a directory, start, stop,
restart and wipe its nodes as child processes (`python -m cli start`, the interpreter running this).

`scripts/bench` does the same in shell for one run; the long-haul and catch-up benchmarks need to
stop one node in the middle, wipe its data and time its restart, so they drive the nodes from here.
"""

from __future__ import annotations

import compileall
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from cli.bench.setup import BenchError
from cli.client import ClientError, LedgerClient

# The packages `ledgerd start` imports, beside `cli` in the source tree (or in site-packages).
PROJECT_PACKAGES = ("ledger", "consensus", "storage", "p2p", "node", "cli")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.05


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (what `du --apparent-size` counts)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


def compile_project(root: Path | None = None) -> bool:
    """Byte-compile the project's packages into their __pycache__ directories, as installing a wheel
    does (pip compiles every module it installs, the container image included). A source checkout run
    with PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module again at each `ledgerd
    start`, which the restart and catch-up timings would count. Answers whether every module
    compiled; a read-only tree is left as it is (modules still import, only slower)."""
    root = Path(__file__).resolve().parents[2] if root is None else root
    ok = True
    for package in PROJECT_PACKAGES:
        if (root / package).is_dir():
            ok = bool(compileall.compile_dir(root / package, quiet=2)) and ok
    return ok


class LocalCluster:
    def __init__(self, root: Path, validators: int, consensus: str, base_port: int) -> None:
        self.root = root
        self.validators = validators
        self.consensus = consensus
        self.base_port = base_port
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * validators
        self._logs: list[IO[bytes] | None] = [None] * validators

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.base_port + k}" for k in range(self.validators)]

    @property
    def keys_dir(self) -> Path:
        return self.root / "net" / "accounts"

    def home(self, k: int) -> Path:
        return self.root / "net" / f"node{k}"

    def data_dir(self, k: int) -> Path:
        return self.home(k) / "data"

    def pid(self, k: int) -> int:
        proc = self.procs[k]
        if proc is None:
            raise BenchError(f"node {k} is not running")
        return proc.pid

    def create(self) -> None:
        compile_project()
        subprocess.run([sys.executable, "-m", "cli", "testnet", "--validators", str(self.validators),
                        "--consensus", self.consensus, "--out", str(self.root / "net"),
                        "--base-port", str(self.base_port), "--accounts", "4"],
                       check=True, stdout=subprocess.DEVNULL)

    def start(self, k: int) -> float:
        """Start node k; answers the monotonic time just before `ledgerd start` was run."""
        log = open(self.root / f"node{k}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs[k] = log
        started = time.monotonic()
        self.procs[k] = subprocess.Popen([sys.executable, "-m", "cli", "start", "--home", str(self.home(k)),
                                          "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        return started

    def start_all(self) -> None:
        for k in range(self.validators):
            self.start(k)
        for k in range(self.validators):
            self.wait_serving(k)

    def status(self, k: int) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = LedgerClient(self.urls[k], timeout_s=2.0).status()
        except (ClientError, OSError):
            return None
        return result

    def wait_serving(self, k: int, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wait until node k answers GET /v1/status; answers the monotonic time it first did."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.status(k) is not None:
                return time.monotonic()
            proc = self.procs[k]
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"node {k} exited with {proc.returncode} (log: {self.root}/node{k}.log)")
            if time.monotonic() > deadline:
                raise BenchError(f"node {k} did not answer GET /v1/status within {timeout_s:g}s")
            time.sleep(POLL_S)

    def wait_caught_up(self, k: int, timeout_s: float) -> tuple[float, float, int]:
        """Wait until node k serves and its height is at least every other running node's.
        Answers (first serving, caught up) monotonic times and the height reached."""
        serving = self.wait_serving(k, timeout_s)
        deadline = serving + timeout_s
        while True:
            own = self.status(k)
            others = [s for j in range(self.validators)
                      if j != k and self.procs[j] is not None and (s := self.status(j)) is not None]
            if own is not None and others and int(own["height"]) >= max(int(s["height"]) for s in others):
                return serving, time.monotonic(), int(own["height"])
            if time.monotonic() > deadline:
                raise BenchError(f"node {k} did not reach the others' height within {timeout_s:g}s")
            time.sleep(POLL_S)

    def stop(self, k: int) -> None:
        """SIGTERM node k and wait for it to exit (SIGKILL after STOP_TIMEOUT_S)."""
        proc, log = self.procs[k], self._logs[k]
        self.procs[k], self._logs[k] = None, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log is not None:
            log.close()

    def wipe(self, k: int) -> None:
        """Delete node k's data directory (its chain and state); its key and configuration stay."""
        if self.procs[k] is not None:
            raise BenchError(f"stop node {k} before wiping its data")
        shutil.rmtree(self.data_dir(k), ignore_errors=True)

    def stop_all(self) -> None:
        """SIGTERM every node at once, then wait for each (as stop() does)."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for k in range(self.validators):
            self.stop(k)


def exit_on_sigterm() -> None:
    """Make SIGTERM end the command like Ctrl-C does, through its `finally` blocks, so that the
    nodes it started are stopped too (the default action would leave them running)."""
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
