"""deploy/swarm for real: a one-node swarm on this machine, four validators as services.

`deploy/swarm/init.sh` runs the genesis ceremony and creates the secrets and configs; `docker stack
deploy` starts the stack with free host ports; then: a transfer commits, a validator's container is
killed (Swarm restarts it and it catches up while the others commit), every validator gets a
rolling `docker service update --force` one at a time with a commit after each, and everything is
removed: the stack, its volumes, secrets and configs, and the swarm itself if this test made it
(`docker swarm leave --force` only when the machine was not in a swarm before, and the
docker_gwbridge network that `swarm init` made removed with it).

Without docker this is skipped, except under CI=true, where it fails: CI must run it.
Settings: LEDGERD_E2E_IMAGE (ledgerd:test) and LEDGERD_E2E_SKIP_BUILD=1, as for the compose tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cli.client import ClientError, LedgerClient
from ledger import keys
from ledger.tx import Transfer, sign_tx
from tests.e2e.cluster import E2E_IMAGE, ROOT, run_with_progress
from tests.helpers import ports

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]
STACK_FILE = ROOT / "deploy" / "swarm" / "ledgerd-stack.yml"
NODES = ("node0", "node1", "node2", "node3")
T = TypeVar("T")


def _say(message: str) -> None:
    print(f"[swarm] {message}", file=sys.__stderr__, flush=True)


def docker(*args: str, check: bool = True, timeout_s: float = 300, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s,
                            env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except (ClientError, OSError, KeyError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def _need_docker() -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        message = "docker is not installed or the engine is not reachable"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}: CI must run the Swarm test", pytrace=False)
        pytest.skip(message)


@contextmanager
def one_node_swarm() -> Iterator[None]:
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    made = state == "inactive"
    # `swarm init` creates the docker_gwbridge network, and `swarm leave` keeps it: it goes too
    # when this test made it.
    gwbridge_before = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
    if made:
        _say("docker swarm init (a one-node swarm, left again at the end)")
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    elif state != "active":
        pytest.fail(f"the Docker engine's swarm state is {state!r}; expected inactive or active")
    try:
        yield
    finally:
        if made:
            docker("swarm", "leave", "--force", check=False)
            if not gwbridge_before:
                docker("network", "rm", "docker_gwbridge", check=False)


def _cleanup(stack: str, prefix: str) -> None:
    docker("stack", "rm", stack, check=False)
    # Volumes can go only once their containers have.
    label = f"label=com.docker.stack.namespace={stack}"
    wait_for(lambda: not docker("ps", "-aq", "--filter", label).stdout.strip(), 120, "the stack's containers to go")
    for node in NODES:
        volume = f"{stack}_{node}-data"
        wait_for(lambda v=volume: docker("volume", "rm", "-f", v, check=False).returncode == 0, 60,  # type: ignore[misc]
                 f"the volume {volume} to be removed")
    for kind in ("secret", "config"):
        names = docker(kind, "ls", "--filter", f"label=dev.ledgerd.swarm={prefix}", "--format", "{{.Name}}",
                       check=False).stdout.split()
        if names:
            docker(kind, "rm", *names, check=False)
    wait_for(lambda: docker("network", "inspect", f"{stack}_ledger", check=False).returncode != 0, 60,
             "the stack's network to go")


def _image() -> str:
    tag = os.environ.get("LEDGERD_E2E_IMAGE") or E2E_IMAGE
    if os.environ.get("LEDGERD_E2E_SKIP_BUILD") != "1":
        _say(f"building {tag} with ./scripts/docker-build")
        run_with_progress([str(ROOT / "scripts" / "docker-build"), "--tag", tag], _say, timeout_s=1200)
    return tag


def _heights(clients: list[LedgerClient]) -> list[int]:
    return [int(c.status()["height"]) for c in clients]


def test_four_validators_on_a_swarm_commit_survive_a_kill_and_a_rolling_update(tmp_path: Path) -> None:
    _need_docker()
    image = _image()
    stack = "ledgerdswarm" + secrets.token_hex(3)
    prefix = stack
    host_ports = ports.free_ports(len(NODES))
    env = {"LEDGERD_IMAGE": image, "LEDGERD_SWARM_PREFIX": prefix, "LEDGERD_CHAIN_ID": "swarm-e2e",
           **{f"LEDGERD_HOST_PORT_{k}": str(p) for k, p in enumerate(host_ports)}}
    ceremony = tmp_path / "ceremony"
    with one_node_swarm():
        try:
            init = subprocess.run([str(ROOT / "deploy" / "swarm" / "init.sh"), str(ceremony)], capture_output=True,
                                  text=True, timeout=600, env={**os.environ, **env})
            assert init.returncode == 0, init.stderr[-3000:]
            # Run again: nothing is regenerated, the keys stay what they were.
            key_before = (ceremony / "node0" / "node_key.pem").read_bytes()
            again = subprocess.run([str(ROOT / "deploy" / "swarm" / "init.sh"), str(ceremony)], capture_output=True,
                                   text=True, timeout=600, env={**os.environ, **env})
            assert again.returncode == 0 and "exists; kept as it is" in again.stderr, again.stderr[-3000:]
            assert (ceremony / "node0" / "node_key.pem").read_bytes() == key_before

            docker("stack", "deploy", "-c", str(STACK_FILE), stack, env=env)
            clients = [LedgerClient(f"http://127.0.0.1:{p}") for p in host_ports]

            def linked() -> bool:
                return all(sum(p["connected"] for p in c.status()["peers"]) == 3 for c in clients)

            wait_for(linked, 240, "four validators linked over the overlay")
            _say("four validators up and linked")
            payer = keys.PrivateKey.load(ceremony / "accounts" / "account0.pem")
            payee = keys.PrivateKey.generate().address
            nonce = 0

            def pay(via: int) -> dict[str, Any]:
                nonlocal nonce
                tx = sign_tx(payer, "swarm-e2e", nonce, Transfer(payee, "LDG", 1))
                result = clients[via].submit(tx.to_json(), wait=True, wait_timeout_s=30)
                assert result["status"] == "committed", result
                nonce += 1
                return result

            pay(0)

            # Kill node2's container: the other three commit; Swarm restarts it and it catches up.
            service = f"label=com.docker.swarm.service.name={stack}_node2"
            victim = docker("ps", "-q", "--filter", service).stdout.strip()
            assert victim
            docker("kill", victim)
            pay(1)
            wait_for(lambda: (c := docker("ps", "-q", "--filter", service).stdout.strip()) and c != victim, 120,
                     "Swarm to restart node2")
            wait_for(lambda: len(set(_heights(clients))) == 1 and _heights(clients)[2] >= 2, 120,
                     "node2 to catch up")
            _say("node2 killed, restarted by Swarm, caught up")

            # Rolling update, one validator at a time; the chain commits after each.
            for k, node in enumerate(NODES):
                docker("service", "update", "--force", "--detach=false", f"{stack}_{node}", timeout_s=300)
                wait_for(linked, 120, f"the links after updating {node}")
                pay((k + 1) % len(NODES))
            final = wait_for(lambda: (h := _heights(clients)) and len(set(h)) == 1 and h, 120, "equal heights")
            balances = {int(c.account(payee)["balances"]["LDG"]) for c in clients}
            assert balances == {nonce}, balances
            _say(f"rolling update done; height {final[0]}, {nonce} transfers committed")
        finally:
            _cleanup(stack, prefix)
            shutil.rmtree(ceremony, ignore_errors=True)
    # Nothing left behind (secrets and configs are gone with the swarm if the test made it).
    assert not docker("volume", "ls", "-q", "--filter", f"name={stack}").stdout.strip()
    assert prefix not in docker("secret", "ls", check=False).stdout + docker("config", "ls", check=False).stdout
