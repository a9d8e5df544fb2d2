"""`ledgerd localnet`: a local cluster as child processes of one foreground command.

Writes a testnet into the directory the first time, then runs `python -m cli start --home DIR/nodeK`
for every node, each logging to DIR/nodeK/node.log, waits until each one's /healthz answers (printing
progress), prints the URLs and keeps watching. Ctrl-C or SIGTERM stops every child: SIGTERM first,
SIGKILL for any that has not exited after `STOP_GRACE_S`. The children also get SIGTERM from the
kernel if this process dies without cleaning up (Linux `PR_SET_PDEATHSIG`), so none is left behind.

A node that exits stays down until the user asks for it back by creating the file DIR/nodeK/restart
(`touch` is enough; localnet removes it): localnet then starts that node again as its own child, so
Ctrl-C stops it with the rest. The same file on a running node restarts it. A node the user starts
by hand (`ledgerd start --home DIR/nodeK`) is not localnet's child, and localnet cannot stop it:
the messages say so, and the final count only includes the nodes localnet really stopped.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

from cli.client import ClientError, LedgerClient
from node.config import CONFIG_FILE, ConfigError, load_config

STOP_GRACE_S = 15.0
POLL_INTERVAL_S = 0.2
PROGRESS_EVERY_S = 5.0
LOG_FILE = "node.log"
LOG_TAIL_LINES = 15
PR_SET_PDEATHSIG = 1
RESTART_FILE = "restart"
DEFAULT_VALIDATORS = 4
DEFAULT_CONSENSUS = "pbft"


class _Stop(Exception):
    """SIGTERM arrived: stop the cluster like Ctrl-C does."""


@dataclass
class Child:
    name: str
    home: Path
    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    ready: bool = False

    @property
    def log_path(self) -> Path:
        return self.home / LOG_FILE


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask Linux to SIGTERM it when localnet dies."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def node_homes(directory: Path) -> list[Path]:
    homes = [p for p in directory.glob("node*") if p.is_dir() and (p / CONFIG_FILE).exists()]
    return sorted(homes, key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 1 << 30)


def _existing_testnet(homes: list[Path]) -> tuple[int, str | None]:
    """How many validators the testnet in `homes` has, and its engine (None if its genesis is unreadable:
    the node itself then fails to start with the precise reason)."""
    from cli.testnet import GENESIS_FILE
    from ledger.errors import Rejected
    from ledger.genesis import Genesis

    try:
        genesis = Genesis.load(homes[0] / GENESIS_FILE)
    except Rejected:
        return len(homes), None
    return len(genesis.validators), genesis.consensus


def prepare(directory: Path, validators: int | None, consensus: str | None, base_port: int,
            accounts: int) -> list[Path]:
    """The node homes under `directory`, writing a new testnet there if it holds none yet.

    `validators` and `consensus` are None when the user did not ask for them: an existing testnet is
    then started as it is. Asked for explicitly, they must match it: silently starting a different
    chain than the one asked for would make every later step surprising.
    """
    homes = node_homes(directory) if directory.is_dir() else []
    if homes:
        have_validators, have_consensus = _existing_testnet(homes)
        wanted = []
        if validators is not None and validators != have_validators:
            wanted.append(f"--validators {validators}")
        if consensus is not None and have_consensus is not None and consensus != have_consensus:
            wanted.append(f"--consensus {consensus}")
        if wanted:
            engine = f" {have_consensus}" if have_consensus else ""
            raise ConfigError(
                f"{directory} already holds a {have_validators}-validator{engine} testnet, not what "
                f"{' and '.join(wanted)} asks for; start the new chain in a directory of its own "
                f"(--dir NEW_DIR), or remove {directory} to replace its chain")
        return homes
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{directory} exists but holds no testnet; choose another --dir or empty it")
    from cli.testnet import make_testnet

    validators = DEFAULT_VALIDATORS if validators is None else validators
    consensus = DEFAULT_CONSENSUS if consensus is None else consensus
    net = make_testnet(directory, validators=validators, consensus=consensus, base_port=base_port,
                       accounts=accounts)
    print(f"created a {validators}-validator {consensus} testnet in {directory} "
          f"(account keys in {directory / 'accounts'})", flush=True)
    return list(net.node_homes)


def _start_child(home: Path) -> Child:
    config = load_config(home)
    host = config.rest_host if config.rest_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"http://{host}:{config.rest_port}"
    log = (home / LOG_FILE).open("ab")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "start", "--home", str(home)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches localnet only, which then stops the
            # children in order instead of racing them.
            start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
    except OSError:
        log.close()
        raise
    return Child(home.name, home, url, process, log)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text) or "    (empty log)"


def _answers(child: Child) -> bool:
    try:
        LedgerClient(child.url, timeout_s=1.0).health()
    except ClientError:
        return False
    return True


def _stop(child: Child) -> None:
    with suppress(ProcessLookupError):
        child.process.send_signal(signal.SIGTERM)


def _reap(child: Child, deadline: float) -> None:
    try:
        child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        print(f"{child.name} did not stop within {STOP_GRACE_S:g}s; killing it", file=sys.stderr)
        child.process.kill()
        child.process.wait()


def stop_all(children: list[Child]) -> int:
    """Stop every child still running and close every log; the number of children it stopped."""
    alive = [c for c in children if c.process.poll() is None]
    for child in alive:
        _stop(child)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in alive:
        _reap(child, deadline)
    for child in children:
        child.log.close()
    return len(alive)


def _restart_requested(child: Child) -> bool:
    """True once per request file: taking the request removes the file."""
    try:
        (child.home / RESTART_FILE).unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        print(f"warning: cannot take the restart request {child.home / RESTART_FILE}: {exc.strerror}",
              file=sys.stderr, flush=True)
        return False
    return True


def _restart(child: Child) -> Child:
    """Stop `child` if it still runs, then start its node again as a new child."""
    if child.process.poll() is None:
        print(f"restart requested: stopping {child.name} (pid {child.process.pid})", flush=True)
        _stop(child)
        _reap(child, time.monotonic() + STOP_GRACE_S)
    child.log.close()
    new = _start_child(child.home)
    print(f"restart requested: {new.name}: pid {new.process.pid}, catching up by block sync; "
          f"log {new.log_path}", flush=True)
    return new


def _restart_hint(child: Child) -> str:
    return (f"  to bring it back under localnet: touch {child.home / RESTART_FILE}\n"
            f"  (a node started by hand instead, with `ledgerd start --home {child.home}`, is yours to "
            f"stop: Ctrl-C here does not reach it)")


@contextmanager
def _stop_signals_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    # SIGINT too: a shell that starts us in the background without job control leaves SIGINT
    # ignored, and Python then never raises KeyboardInterrupt, so Ctrl-C would be lost.
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)


def _wait_ready(children: list[Child], timeout_s: float) -> None:
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY_S
    while True:
        for child in children:
            code = child.process.poll()
            if code is not None:
                raise ConfigError(f"{child.name} exited with status {code} while starting; the end of "
                                  f"{child.log_path}:\n{_tail(child.log_path)}")
            if not child.ready and _answers(child):
                child.ready = True
                done = sum(c.ready for c in children)
                print(f"  {child.name} ready at {child.url} ({done}/{len(children)})", flush=True)
        if all(c.ready for c in children):
            return
        now = time.monotonic()
        if now - started > timeout_s:
            waiting = [c for c in children if not c.ready]
            tails = "\n".join(f"  {c.log_path}:\n{_tail(c.log_path)}" for c in waiting)
            names = ", ".join(c.name for c in waiting)
            raise ConfigError(f"{names} did not answer within {timeout_s:g}s:\n{tails}")
        if now >= next_progress:
            waiting_names = ", ".join(c.name for c in children if not c.ready)
            print(f"  still waiting for {waiting_names} ({now - started:.0f}s)", flush=True)
            next_progress = now + PROGRESS_EVERY_S
        time.sleep(POLL_INTERVAL_S)


def _watch(children: list[Child]) -> NoReturn:
    """Report each node that exits, restart the ones the user asks for; return only by a signal.

    A cluster tolerates a failed validator, and a developer who kills one on purpose (to watch the
    rest carry on and the node catch up) wants the rest to stay up, so one exit is not fatal. Nor is
    every node exiting: localnet stays up so that they can be brought back, and Ctrl-C still leaves.
    `children` is updated in place: a restarted node replaces its old entry.
    """
    reported: set[str] = set()
    while True:
        for index, child in enumerate(children):
            if _restart_requested(child):
                try:
                    children[index] = _restart(child)
                except (OSError, ConfigError) as exc:  # e.g. its config.toml was edited into nonsense
                    print(f"warning: cannot restart {child.name}: {exc}", file=sys.stderr, flush=True)
                else:
                    reported.discard(child.name)
                    continue
            code = child.process.poll()
            if code is not None and child.name not in reported:
                reported.add(child.name)
                others = "the others keep running" if len(reported) < len(children) else "no node is running"
                print(f"warning: {child.name} exited with status {code}; {others}. The end of "
                      f"{child.log_path}:\n{_tail(child.log_path)}\n{_restart_hint(child)}",
                      file=sys.stderr, flush=True)
        time.sleep(POLL_INTERVAL_S)


def _report_stop(exited: list[Child], stopped: int) -> None:
    """Say what was stopped, and which nodes still answer that localnet could not stop."""
    line = f"stopped {stopped} node(s)"
    if exited:
        line += f"; {', '.join(c.name for c in exited)} had already exited"
    print(line, flush=True)
    for child in exited:
        if _answers(child):
            print(f"note: {child.name} at {child.url} still answers: that node runs outside localnet "
                  f"(started by hand?), so localnet did not stop it; stop it where it runs",
                  file=sys.stderr, flush=True)


def run_localnet(directory: Path, validators: int | None = None, consensus: str | None = None,
                 base_port: int = 8001, accounts: int = 4, ready_timeout_s: float = 60.0) -> int:
    homes = prepare(directory, validators, consensus, base_port, accounts)
    children: list[Child] = []
    with _stop_signals_raise():
        try:
            print(f"starting {len(homes)} node(s); logs in {directory}/nodeK/{LOG_FILE}", flush=True)
            for home in homes:
                # A request left from an earlier run is not one for this run's nodes.
                (home / RESTART_FILE).unlink(missing_ok=True)
                child = _start_child(home)
                children.append(child)
                print(f"  {child.name}: pid {child.process.pid}", flush=True)
            _wait_ready(children, ready_timeout_s)
            print("localnet is up:", flush=True)
            for child in children:
                print(f"  {child.name}  {child.url}", flush=True)
            print(f"accounts: {directory / 'accounts'}; try: ledgerd status --node {children[0].url}",
                  flush=True)
            print(f"press Ctrl-C to stop; to restart node K: touch {directory}/nodeK/{RESTART_FILE}",
                  flush=True)
            _watch(children)
        except (KeyboardInterrupt, _Stop):
            print("\nstopping localnet ...", flush=True)
            exited = [c for c in children if c.process.poll() is not None]
            _report_stop(exited, stop_all(children))
            return 0
        finally:
            # Also on errors: never leave a child behind (stop_all skips the ones that exited).
            stop_all(children)
