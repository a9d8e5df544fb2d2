"""A docker compose cluster under test: the compose tool, one isolated project, faults, REST calls.

`Cluster` drives one compose project made from the repository's docker-compose.yml, with its own
project name, its own data folder and its own host ports, so it cannot touch a developer's
`./compose-data` or a cluster already running. Fault injection uses only the compose tool and the
Docker engine (kill/stop/start, pause/unpause, network disconnect/connect); REST calls go only to the
127.0.0.1 ports the project publishes. Nothing here sleeps for a fixed time to wait for an outcome:
waits poll a condition against a deadline.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ledger import keys
from ledger.tx import Payload, Transaction, sign_tx
from tests.helpers import ports

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
NODES = ("node0", "node1", "node2", "node3")
ACCOUNTS = 12
POLL_S = 0.5
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COMMAND_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 10.0
# The suite's own image tag: building it must never replace the `ledgerd:local` a developer built
# (scripts/docker-build's and docker-compose.yml's default) and may be running.
E2E_IMAGE = "ledgerd:test"
DEVELOPER_IMAGE = "ledgerd:local"
PROGRESS_EVERY_S = 30.0
OUTPUT_TAIL_LINES = 60

T = TypeVar("T")


class ClusterError(Exception):
    """The cluster or a command driving it did not do what a test needed; the message says what."""


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_compose() -> list[str] | None:
    """The compose command line to use: $LEDGERD_E2E_COMPOSE if set (e.g. "docker-compose"), else
    `docker compose` (v2) when the plugin answers, else `docker-compose` (v1), else None."""
    forced = os.environ.get("LEDGERD_E2E_COMPOSE", "").split()
    if forced:
        if not _succeeds([*forced, "version"]):
            raise ClusterError(f"LEDGERD_E2E_COMPOSE={' '.join(forced)!r} does not run")
        return forced
    if shutil.which("docker") and _succeeds(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and _succeeds(["docker-compose", "version"]):
        return ["docker-compose"]
    return None


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout_s: float = COMMAND_TIMEOUT_S,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with no stdin; on failure (with `check`) raise with its output in the message."""
    try:
        result = subprocess.run(list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`{' '.join(argv)}` did not finish within {timeout_s:.0f} s") from exc
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-4000:]
        raise ClusterError(f"`{' '.join(argv)}` exited with status {result.returncode}:\n{output}")
    return result


def _is_step(line: str) -> bool:
    """A line of scripts/docker-build worth showing: its steps ("==> ...") and their notes."""
    return line.startswith("==> ") or (line.startswith("    ") and not line.startswith("     "))


def run_with_progress(argv: Sequence[str], say: Callable[[str], None], *, timeout_s: float,
                      progress_every_s: float = PROGRESS_EVERY_S) -> None:
    """Run a long command (an image build), passing its step lines to `say` as they come and saying
    "still running" when it has been quiet for `progress_every_s`; raise with the end of its output
    if it fails or outlives `timeout_s` (it is killed then)."""
    lines: queue.Queue[str | None] = queue.Queue()
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    # Its own process group, so that giving up kills what it started too (a docker build), not just it.
    proc = subprocess.Popen(list(argv), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, name="run-with-progress", daemon=True)
    reader.start()
    started = time.monotonic()
    deadline = started + timeout_s
    last_said = started
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ClusterError(f"`{' '.join(argv)}` did not finish within {timeout_s:.0f} s; its last "
                                   "lines:\n" + "\n".join(tail))
            try:
                line = lines.get(timeout=min(1.0, deadline - now))
            except queue.Empty:
                if time.monotonic() - last_said >= progress_every_s:
                    last = f"; last line: {tail[-1].strip()[:100]}" if tail else ""
                    say(f"  still running ({time.monotonic() - started:.0f} s{last})")
                    last_said = time.monotonic()
                continue
            if line is None:
                break
            tail.append(line)
            if _is_step(line):
                say("  " + line.strip())
                last_said = time.monotonic()
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        if code != 0:
            raise ClusterError(f"`{' '.join(argv)}` exited with status {code}:\n" + "\n".join(tail))
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=5)


def free_ports(count: int) -> list[int]:
    """`count` host ports for the compose services, free now and below the ephemeral range."""
    return ports.free_ports(count)


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    """Poll `probe` until it returns something other than None (or False); raise after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (ClusterError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(POLL_S)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


@dataclass
class Cluster:
    compose_cmd: list[str]
    project: str
    data_dir: Path
    host_ports: dict[str, int]
    image: str = E2E_IMAGE
    extra_networks: list[str] = field(default_factory=list)

    # --- compose and docker ---------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LEDGERD_COMPOSE_DATA"] = str(self.data_dir)
        # The image under test, never whatever docker-compose.yml would pick by default.
        env["LEDGERD_IMAGE"] = self.image
        env["LEDGERD_HOST_BIND"] = "127.0.0.1"
        # One funded sender per test, so a test that fails with a transaction still pending cannot
        # leave a nonce gap that breaks the next one.
        env["LEDGERD_ACCOUNTS"] = str(ACCOUNTS)
        for k, name in enumerate(NODES):
            env[f"LEDGERD_HOST_PORT_{k}"] = str(self.host_ports[name])
        return env

    def compose(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        # --ansi never (v1 knows it since 1.28): no colours or progress bars in captured output.
        argv = [*self.compose_cmd, "--ansi", "never", "--file", str(COMPOSE_FILE),
                "--project-name", self.project, *args]
        return run(argv, env=self.env, timeout_s=timeout_s, check=check)

    @property
    def network(self) -> str:
        # Compose v1 and v2 both name a project's default network "<project>_default"; the project
        # name is plain lowercase alphanumerics, so neither tool rewrites it.
        return f"{self.project}_default"

    def container(self, service: str) -> str:
        out = run(["docker", "ps", "--all", "--quiet",
                   "--filter", f"label=com.docker.compose.project={self.project}",
                   "--filter", f"label=com.docker.compose.service={service}"]).stdout.split()
        if len(out) != 1:
            raise ClusterError(f"expected one container for service {service}, found {len(out)}")
        return out[0]

    def inspect(self, service: str) -> dict[str, Any]:
        data = json.loads(run(["docker", "inspect", self.container(service)]).stdout)
        return dict(data[0])

    def state(self, service: str) -> str:
        """'running', 'paused', 'exited', ...; for a running container with a healthcheck, its
        health joins it: 'running/healthy', 'running/starting', 'running/unhealthy'."""
        st = self.inspect(service)["State"]
        status = str(st["Status"])
        health = st.get("Health")
        return f"{status}/{health['Status']}" if status == "running" and health else status

    def networks_of(self, service: str) -> list[str]:
        return sorted(self.inspect(service)["NetworkSettings"]["Networks"])

    def logs(self, tail: int = 60) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(tail), check=False)
        # Some v2 releases still prefix lines with an erase-line escape.
        return ANSI_ESCAPE.sub("", result.stdout + result.stderr).strip()

    def kill(self, service: str) -> None:
        """SIGKILL: a crash, nothing gets flushed or closed."""
        self.compose("kill", "-s", "SIGKILL", service)

    def stop(self, service: str) -> None:
        """SIGTERM and wait: an orderly stop."""
        self.compose("stop", "-t", "20", service)

    def start(self, service: str) -> None:
        self.compose("start", service)

    def pause(self, service: str) -> None:
        self.compose("pause", service)

    def unpause(self, service: str) -> None:
        self.compose("unpause", service)

    def disconnect(self, service: str, network: str | None = None) -> None:
        run(["docker", "network", "disconnect", network or self.network, self.container(service)])

    def connect(self, service: str, network: str | None = None) -> None:
        # The alias is what peers dial (config.toml names peers by service name).
        run(["docker", "network", "connect", "--alias", service, network or self.network,
             self.container(service)])

    def create_network(self, suffix: str) -> str:
        name = f"{self.project}_{suffix}"
        run(["docker", "network", "create", "--label", f"dev.ledgerd.e2e={self.project}", name])
        self.extra_networks.append(name)
        return name

    def partition(self, *groups: Sequence[str]) -> None:
        """Split the nodes into groups that reach each other but nothing outside their group: the
        first group stays on the project network, every other group gets a network of its own."""
        for i, group in enumerate(groups[1:], start=1):
            net = self.create_network(f"part{i}")
            for service in group:
                self.disconnect(service)
                self.connect(service, net)

    def heal(self) -> None:
        """Undo every fault: running, unpaused, on the project network only, test networks gone."""
        for service in NODES:
            state = self.state(service)
            if state == "paused":
                self.unpause(service)
            elif not state.startswith("running"):
                self.start(service)
            networks = self.networks_of(service)
            for net in networks:
                if net != self.network:
                    self.disconnect(service, net)
            if self.network not in networks:
                self.connect(service, self.network)
        for net in self.extra_networks:
            run(["docker", "network", "rm", net], check=False)
        self.extra_networks.clear()

    def wait_healthy(self, services: Sequence[str] = NODES, timeout_s: float = 180.0) -> None:
        def probe() -> bool:
            states = {s: self.state(s) for s in services}
            dead = [s for s, st in states.items() if not st.startswith(("running", "paused"))]
            if dead:
                raise _Fatal(f"{', '.join(dead)} stopped ({states}) while waiting for health")
            return all(st == "running/healthy" for st in states.values())

        try:
            wait_for(f"{', '.join(services)} to be healthy", probe, timeout_s)
        except _Fatal as exc:
            raise ClusterError(f"{exc}\n--- compose logs ---\n{self.logs()}") from None
        except ClusterError as exc:
            states = {s: self.state(s) for s in services}
            raise ClusterError(f"{exc}; states {states}\n--- compose logs ---\n{self.logs()}") from None

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
        for net in self.extra_networks:
            run(["docker", "network", "rm", net], check=False)
        self.extra_networks.clear()

    # --- REST -----------------------------------------------------------------------------------

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.host_ports[service]}"

    def request(self, method: str, service: str, path: str, body: Any = None,
                timeout_s: float = HTTP_TIMEOUT_S) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(service) + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as response:
                return Reply(response.status, json.loads(response.read() or b"null"))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
            return Reply(exc.code, parsed)
        except (urllib.error.URLError, OSError) as exc:
            raise ClusterError(f"{method} {service}{path}: {exc}") from exc

    def get(self, service: str, path: str, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
        """GET that must answer 200; returns the JSON body."""
        reply = self.request("GET", service, path, timeout_s=timeout_s)
        if reply.status != 200:
            raise ClusterError(f"GET {service}{path} answered {reply.status}: {reply.body}")
        return reply.body

    def get_inside(self, service: str, path: str) -> Any:
        """GET from inside the service's own container, which works while it is cut off from every
        network (the port comes from what the entrypoint recorded when it started the node)."""
        code = ("import json, sys, urllib.request\n"
                "port = json.load(open('/run/ledgerd-node.json'))['rest_port']\n"
                "url = f'http://127.0.0.1:{port}' + sys.argv[1]\n"
                "sys.stdout.write(urllib.request.urlopen(url, timeout=5).read().decode())\n")
        out = run(["docker", "exec", self.container(service), "/opt/ledgerd/bin/python", "-c", code, path],
                  timeout_s=30).stdout
        return json.loads(out)

    def status(self, service: str) -> dict[str, Any]:
        return dict(self.get(service, "/v1/status"))

    def height(self, service: str) -> int:
        return int(self.status(service)["height"])

    def block_hash(self, service: str, height: int) -> str:
        block = self.get(service, f"/v1/blocks/{height}")
        return str(block.get("hash") or block["header"]["hash"])

    # --- accounts and transactions --------------------------------------------------------------

    def accounts(self) -> list[keys.PrivateKey]:
        """The funded account keys `ledgerd testnet` wrote into the data folder's accounts/."""
        folder = self.data_dir / "accounts"
        index = json.loads((folder / "index.json").read_text())
        return [keys.PrivateKey.load(folder / entry["key_file"]) for entry in index]

    def chain_id(self) -> str:
        return str(self.status("node0")["chain_id"])

    def next_nonce(self, service: str, address: str) -> int:
        return int(self.get(service, f"/v1/accounts/{address}")["nonce"])

    def sign(self, sender: keys.PrivateKey, payload: Payload, nonce: int) -> Transaction:
        return sign_tx(sender, self.chain_id(), nonce, payload)

    def submit(self, service: str, tx: Transaction) -> str:
        """POST one transaction without waiting; returns its hash (the node must accept it)."""
        reply = self.request("POST", service, "/v1/transactions", tx.to_json())
        if reply.status != 202:
            raise ClusterError(f"{service} refused tx {tx.hash}: {reply.status} {reply.body}")
        return str(reply.body["hash"])

    def tx_status(self, service: str, tx_hash: str) -> dict[str, Any] | None:
        reply = self.request("GET", service, f"/v1/transactions/{tx_hash}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise ClusterError(f"GET {service}/v1/transactions/{tx_hash}: {reply.status} {reply.body}")
        return dict(reply.body)

    def wait_committed(self, service: str, tx_hash: str, timeout_s: float) -> dict[str, Any]:
        """The tx's status once `service` reports it committed (a failed tx is an error)."""
        def probe() -> dict[str, Any] | None:
            st = self.tx_status(service, tx_hash)
            if st is not None and st["status"] == "failed":
                raise _Fatal(f"tx {tx_hash} failed on {service}: {st.get('result')}")
            return st if st is not None and st["status"] == "committed" else None

        try:
            return wait_for(f"tx {tx_hash[:16]} to commit on {service}", probe, timeout_s)
        except _Fatal as exc:
            raise ClusterError(str(exc)) from None
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.diagnose()}") from None

    def wait_height(self, service: str, height: int, timeout_s: float) -> int:
        try:
            return wait_for(f"{service} to reach height {height}",
                            lambda: h if (h := self.height(service)) >= height else None, timeout_s)
        except ClusterError as exc:
            raise ClusterError(f"{exc}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """What each node says about itself, and the end of the logs: for failure messages."""
        lines = ["--- nodes ---"]
        for name in NODES:
            try:
                state = self.state(name)
                reply = self.request("GET", name, "/v1/status", timeout_s=2.0)
            except ClusterError as exc:
                lines.append(f"{name}: {exc}")
                continue
            if reply.status != 200 or not isinstance(reply.body, dict):
                lines.append(f"{name}: {state}, /v1/status answered {reply.status}")
                continue
            s = reply.body
            peers = s.get("peers") or []
            connected = sum(1 for p in peers if isinstance(p, dict) and p.get("connected"))
            lines.append(f"{name}: {state}, height {s.get('height')}, "
                         f"peers {connected}/{len(peers)} connected, mempool {s.get('mempool_size')}, "
                         f"engine {s.get('engine')}")
        return "\n".join(lines) + "\n--- compose logs ---\n" + self.logs(tail=25)

    def assert_same_chain(self, services: Sequence[str], up_to: int) -> None:
        """Every service holds the same block at each height 1..up_to (they agree on the prefix)."""
        for h in range(1, up_to + 1):
            hashes = {s: self.block_hash(s, h) for s in services}
            if len(set(hashes.values())) != 1:
                raise ClusterError(f"nodes disagree on block {h}: {hashes}")


class _Fatal(Exception):
    """Raised inside a wait probe to stop waiting at once (waiting longer cannot help)."""
