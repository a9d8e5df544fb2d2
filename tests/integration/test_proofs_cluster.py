"""Proofs from a running cluster (real Nodes in one process, loopback p2p): every validator answers a
bundle for a committed transaction, each verifies offline against the genesis file, and `ledgerd
proof` / `ledgerd verify` work end to end. Every node started is stopped in a finally (the exit stack)."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from cli import testnet as tn
from cli.main import main
from cli.proof import certificate_signers
from ledger import keys
from ledger.proof import verify_bundle
from ledger.tx import Record
from node.api.app import ApiServer, limits_from_config, make_app
from node.node import Node
from tests.helpers.nodes import signed
from tests.helpers.ports import free_base_port

pytestmark = pytest.mark.timeout(90)
FAST = {"tick_ms": 10, "status_interval_s": 0.1, "sync_lag_grace_s": 0.3}


async def eventually(predicate: Any, what: str, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("consensus", "validators", "finality"),
                         [("pbft", 4, "bft-quorum"), ("raft", 3, "raft-leader-signature")])
async def test_every_node_proves_a_committed_record_and_the_cli_verifies_it_offline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], consensus: str, validators: int, finality: str) -> None:
    base = free_base_port()
    net = tn.make_testnet(tmp_path / "net", validators=validators, consensus=consensus, accounts=2, base_port=base)
    alice = keys.PrivateKey.load(net.account_files[0])
    tx = signed(alice, 0, Record("contract/42", "sha256:" + "ab" * 32))
    async with AsyncExitStack() as stack:
        nodes = []
        for home in net.node_homes:
            node = Node.open(home, dict(FAST), environ={})
            stack.push_async_callback(node.stop)
            await node.start()
            nodes.append(node)
        assert [o.code for o in await nodes[0].service.submit([tx.to_json()])] == ["accepted"]
        status = await nodes[0].service.wait_committed(tx.hash, 30)
        assert status is not None and status.status == "committed" and status.height is not None
        await eventually(lambda: all(n.service.tx_status(tx.hash) is not None
                                     and n.service.tx_status(tx.hash).status == "committed"  # type: ignore[union-attr]
                                     for n in nodes), "every node to commit the record")

        bundles = [n.service.proof(tx.hash) for n in nodes]
        genesis = nodes[0].genesis
        for bundle in bundles:
            assert bundle is not None
            summary = verify_bundle(bundle, genesis, certificate_signers)
            assert summary["tx"] == tx.hash and summary["height"] == status.height
            assert summary["result"] == {"code": "ok"} and summary["finality"] == finality
        # Each node stores the certificate it assembled (PBFT: its own quorum of seals may differ);
        # everything else of the bundle is the chain's and is the same from every node.
        without_certificate = [{k: v for k, v in b.items() if k != "certificate"} for b in bundles if b]
        assert all(b == without_certificate[0] for b in without_certificate)

        out = tmp_path / "p.json"
        genesis_file = net.node_homes[0] / "genesis.json"
        server = ApiServer(make_app(nodes[1].service, nodes[1].metrics, limits_from_config(nodes[1].config)),
                           "127.0.0.1", 0)
        await server.start()
        stack.push_async_callback(server.stop)
        url = f"http://127.0.0.1:{server.port}"
        assert await asyncio.to_thread(main, ["proof", tx.hash, "--node", url, "--out", str(out)]) == 0
        assert await asyncio.to_thread(main, ["proof", "--height", str(status.height), "--node", url,
                                              "--out", str(tmp_path / "h.json")]) == 0
        assert await asyncio.to_thread(main, ["proof", "cd" * 32, "--node", url]) == 1
    capsys.readouterr()
    # Every node is stopped: the check is offline.
    assert main(["verify", str(out), "--genesis", str(genesis_file)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tx"] == tx.hash and summary["type"] == "record"
    assert summary["payload"] == {"key": "contract/42", "value": "sha256:" + "ab" * 32}
    assert main(["verify", str(tmp_path / "h.json"), "--genesis", str(genesis_file)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "header"
    out.write_text(out.read_text().replace("contract/42", "contract/43"))
    assert main(["verify", str(out), "--genesis", str(genesis_file)]) == 1
    assert "tx_signature" in capsys.readouterr().err
