"""`ledgerd testnet`: node homes with keys, config and identical genesis; funded account keys; ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.testnet import make_testnet
from ledger import keys
from ledger.genesis import Genesis
from node.config import ConfigError, load_config


def test_testnet_writes_homes_genesis_accounts_and_ports(tmp_path: Path) -> None:
    out = tmp_path / "net"
    net = make_testnet(out, validators=3, consensus="raft", chain_id="my-chain", accounts=5, base_port=7001)
    genesis_texts = {(out / f"node{k}" / "genesis.json").read_text() for k in range(3)}
    assert len(genesis_texts) == 1
    genesis = Genesis.load(out / "node0" / "genesis.json")
    assert genesis.chain_id == "my-chain" and genesis.consensus == "raft"
    assert genesis.validator_ids == net.node_ids
    for k in range(3):
        home = out / f"node{k}"
        config = load_config(home, environ={})
        assert (config.rest_port, config.p2p_port) == (7001 + k, 8001 + k)
        assert config.consensus == "raft"
        assert keys.PrivateKey.load(config.path("node_key_file")).address == net.node_ids[k]
        assert set(config.peers) == set(net.node_ids) - {net.node_ids[k]}
        assert config.peers[net.node_ids[(k + 1) % 3]] == f"wss://127.0.0.1:{8001 + (k + 1) % 3}"
        assert (config.path("node_key_file").stat().st_mode & 0o777) == 0o600
    index = json.loads((out / "accounts" / "index.json").read_text())
    assert len(index) == 5
    allocated = dict(genesis.allocations)
    for entry in index:
        key = keys.PrivateKey.load(out / "accounts" / entry["key_file"])
        assert key.address == entry["address"]
        assert allocated[key.address] == entry["balance"]["LDG"] > 0
    assert (out / "accounts" / "account0.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_hosts_name_each_node_for_binding_and_for_its_peers(tmp_path: Path) -> None:
    net = make_testnet(tmp_path / "net", validators=2, hosts=["node0", "node1"], accounts=1)
    config = load_config(net.node_homes[1], environ={})
    assert (config.rest_host, config.p2p_host) == ("node1", "node1")
    assert config.peers == {net.node_ids[0]: "wss://node0:9001"}
    assert net.rest_urls == ("http://node0:8001", "http://node1:8002")


def test_refuses_to_overwrite_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty; refusing to overwrite"):
        make_testnet(tmp_path / "net", validators=1)
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == ["keep.txt"]
    make_testnet(tmp_path / "empty", validators=1)  # an existing empty dir is fine
    (tmp_path / "empty2").mkdir()
    make_testnet(tmp_path / "empty2", validators=1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"validators": 0}, "--validators"),
    ({"consensus": "paxos"}, "--consensus"),
    ({"chain_id": "bad id"}, "--chain-id"),
    ({"hosts": ["a"]}, "--hosts"),
    ({"base_port": 65000}, "--base-port"),
    ({"accounts": -1}, "--accounts"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path, kwargs: dict[str, object],
                                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_testnet(tmp_path / "net", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "net").exists()
