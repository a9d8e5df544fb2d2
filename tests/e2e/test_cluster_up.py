"""`docker compose up` gives a working cluster: four healthy validators of one chain, reachable on
their published host ports, with the funded account keys in the data folder."""

from __future__ import annotations

import json
import os

import pytest

from ledger import keys
from tests.e2e.cluster import NODES, Cluster

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]


def test_every_node_is_healthy_and_on_the_same_chain(cluster: Cluster) -> None:
    healthz = {name: cluster.get(name, "/healthz") for name in NODES}
    statuses = {name: cluster.status(name) for name in NODES}
    for name, s in statuses.items():
        print(name, s["node_id"][:12], s["chain_id"], s["consensus"], "height", s["height"])

    assert all(h["status"] == "ok" for h in healthz.values()), healthz
    chain_ids = {s["chain_id"] for s in statuses.values()} | {h["chain_id"] for h in healthz.values()}
    assert len(chain_ids) == 1, f"nodes report different chains: {chain_ids}"
    # Four distinct validators that all know the same validator set, each answering as itself.
    node_ids = [s["node_id"] for s in statuses.values()]
    assert len(set(node_ids)) == 4
    for name, s in statuses.items():
        assert s["node_id"] == healthz[name]["node_id"]
        assert sorted(v["node_id"] for v in s["validators"]) == sorted(node_ids)
    expected = os.environ.get("LEDGERD_CONSENSUS") or "pbft"  # what the compose file passes to init
    assert {s["consensus"] for s in statuses.values()} == {expected}


def test_init_left_usable_account_keys_in_the_data_folder(cluster: Cluster) -> None:
    index = json.loads((cluster.data_dir / "accounts" / "index.json").read_text())
    accounts = cluster.accounts()
    assert accounts and [a.address for a in accounts] == [e["address"] for e in index]
    # Genesis funded exactly these accounts: every node reports the balance index.json promises.
    for entry in index:
        for name in NODES:
            account = cluster.get(name, f"/v1/accounts/{entry['address']}")
            assert account["balances"].get("LDG") == entry["balance"]["LDG"], (name, account)
    assert all(keys.is_address(a.address) for a in accounts)


def test_init_is_idempotent(cluster: Cluster) -> None:
    """Running the init service again keeps the existing testnet (same keys, same chain)."""
    before = sorted(p.name for p in (cluster.data_dir / "accounts").iterdir())
    node0_key = (cluster.data_dir / "node0" / "node_key.pem").read_bytes()
    result = cluster.compose("run", "--rm", "--no-deps", "-T", "init")
    output = result.stdout + result.stderr
    assert "already exists" in output, output
    assert sorted(p.name for p in (cluster.data_dir / "accounts").iterdir()) == before
    assert (cluster.data_dir / "node0" / "node_key.pem").read_bytes() == node0_key
