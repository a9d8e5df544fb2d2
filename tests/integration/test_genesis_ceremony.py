"""The genesis ceremony end to end, as four institutions and a coordinator would run it.

Four node homes are made in four separate folders (each institution's machine); only the lines
`genesis node-info` prints, the genesis file and the peers file travel. The coordinator's folder
never holds a node key. Then four `ledgerd start` processes (peers dialed by the host name
"localhost" over wss://) form one chain that commits a transfer. Every child is killed by PID in a
finally.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli.client import ClientError, LedgerClient
from ledger import keys
from ledger.tx import Transfer, sign_tx
from tests.helpers import ports

BIN = Path(sys.executable).parent / "ledgerd"
CLI = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "cli"]
N = 4
pytestmark = pytest.mark.timeout(180)


def ledgerd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"ledgerd {' '.join(args)} failed: {result.stderr}")
    return result


def test_four_institutions_make_one_chain_without_sharing_a_key(tmp_path: Path) -> None:
    free = ports.free_ports(2 * N)
    p2p_ports, rest_ports = free[:N], free[N:]
    machines = [tmp_path / f"institution{i}" for i in range(N)]
    coordinator = tmp_path / "coordinator"
    coordinator.mkdir()

    # Each institution: its node key, made at home; it shares one line.
    infos = []
    for i, machine in enumerate(machines):
        out = ledgerd("genesis", "node-info", "--home", str(machine / "home"), "--name", f"bank{i}",
                      "--p2p-url", f"wss://localhost:{p2p_ports[i]}").stdout
        infos.append(json.loads(out))
        assert "PRIVATE" not in out and set(infos[-1]) == {"name", "node_id", "p2p_url"}
    # Running it again keeps the same identity: a key is never regenerated.
    again = ledgerd("genesis", "node-info", "--home", str(machines[0] / "home"), "--name", "bank0",
                    "--p2p-url", f"wss://localhost:{p2p_ports[0]}").stdout
    assert json.loads(again)["node_id"] == infos[0]["node_id"]
    payer_file = machines[0] / "payer.pem"
    ledgerd("keys", "new", "--out", str(payer_file))
    payer = keys.PrivateKey.load(payer_file)
    member = keys.PrivateKey.generate().address
    payee = keys.PrivateKey.generate().address

    # The coordinator assembles the genesis from what was shared.
    draft = str(coordinator / "ceremony.json")
    ledgerd("genesis", "init", "--draft", draft, "--chain-id", "consortium-1", "--consensus", "pbft",
            "--member", member, "--account", f"{payer.address}=1000")
    for info in infos:
        ledgerd("genesis", "add-validator", "--draft", draft, "--info", json.dumps(info))
    refused = ledgerd("genesis", "add-validator", "--draft", draft, "--info", json.dumps(infos[0]), check=False)
    assert refused.returncode == 1 and "already a validator" in refused.stderr
    genesis_hash = ledgerd("genesis", "finalize", "--draft", draft, "--out", str(coordinator)).stdout.strip()
    assert len(genesis_hash) == 64
    assert not list(coordinator.glob("*.pem"))
    assert ledgerd("genesis", "hash", str(coordinator / "genesis.json")).stdout.strip() == genesis_hash

    # Each institution checks the hash and writes its home around its own key.
    wrong = ledgerd("genesis", "node-home", "--home", str(machines[0] / "home"),
                    "--genesis", str(coordinator / "genesis.json"), "--peers", str(coordinator / "peers.json"),
                    "--expect-hash", "0" * 64, check=False)
    assert wrong.returncode == 1 and "do not start" in wrong.stderr
    for i, machine in enumerate(machines):
        got = ledgerd("genesis", "node-home", "--home", str(machine / "home"),
                      "--genesis", str(coordinator / "genesis.json"), "--peers", str(coordinator / "peers.json"),
                      "--expect-hash", genesis_hash, "--p2p-host", "127.0.0.1",
                      "--rest-port", str(rest_ports[i])).stdout.strip()
        assert got == genesis_hash
        config = (machine / "home" / "config.toml").read_text()
        assert '= "ws://' not in config and '= "wss://localhost:' in config and "p2p_allow_plaintext = false" in config

    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "LEDGERD_STATUS_INTERVAL_S": "0.5"}
    try:
        for machine in machines:
            log = (machine / "node.log").open("wb")
            procs.append(subprocess.Popen([*CLI, "start", "--home", str(machine / "home")], stdout=log,
                                          stderr=subprocess.STDOUT, env=env))
        clients = [LedgerClient(f"http://127.0.0.1:{port}") for port in rest_ports]

        def all_linked() -> bool:
            try:
                return all(sum(p["connected"] for p in c.status()["peers"]) == N - 1 for c in clients)
            except ClientError:
                return False

        ports.wait_for(all_linked, 60, "four nodes linked over wss://")
        tx = sign_tx(payer, "consortium-1", 0, Transfer(payee, "LDG", 7))
        result = clients[1].submit(tx.to_json(), wait=True, wait_timeout_s=30)
        assert result["status"] == "committed", result
        ports.wait_for(lambda: all(int(c.account(payee)["balances"].get("LDG", 0)) == 7 for c in clients), 30,
                       "every node to see the transfer")
        assert {c.status()["genesis_hash"] for c in clients} == {genesis_hash}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
