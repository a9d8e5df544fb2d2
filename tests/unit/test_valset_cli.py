"""`ledgerd join`, `ledgerd testnet --observers` and the validator-set actions of `ledgerd gov
propose`: what they write, and --dry-run printing the new n, f and quorum without sending."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cli.client import LedgerClient
from cli.testnet import make_testnet
from ledger import keys, valset
from ledger.genesis import Genesis
from ledger.tx import decode_tx
from tests.helpers.cli import run


def _config(home: Path) -> dict[str, Any]:
    return tomllib.loads((home / "config.toml").read_text())


def test_testnet_writes_observer_homes_that_dial_every_validator(tmp_path: Path) -> None:
    net = make_testnet(tmp_path / "net", validators=4, accounts=1, base_port=7001, observers=2)
    assert [h.name for h in net.observer_homes] == ["observer0", "observer1"]
    for k, home in enumerate(net.observer_homes):
        config = _config(home)
        assert (config["rest_port"], config["p2p_port"]) == (7101 + k, 8101 + k)
        assert set(config["peers"]) == set(net.node_ids)
        node_id = keys.PrivateKey.load(home / "node_key.pem").address
        assert node_id not in net.node_ids
        assert Genesis.load(home / "genesis.json") == net.genesis


def test_join_writes_an_observer_home_with_a_fresh_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = make_testnet(tmp_path / "net", validators=2, accounts=1)
    genesis = net.node_homes[0] / "genesis.json"
    peers = [f"--peer={i}=wss://127.0.0.1:{9001 + k}" for k, i in enumerate(net.node_ids)]
    code, out, err = run(["join", "--genesis", str(genesis), *peers, "--out", str(tmp_path / "obs"),
                          "--rest-port", "8200", "--p2p-port", "9200"], capsys)
    assert code == 0, err
    node_id = keys.PrivateKey.load(tmp_path / "obs" / "node_key.pem").address
    assert node_id in out and node_id not in net.node_ids
    config = _config(tmp_path / "obs")
    assert (config["rest_port"], config["p2p_port"]) == (8200, 9200) and set(config["peers"]) == set(net.node_ids)
    # Again into the same directory, or with a peer that is no validator: one line, exit 1.
    code, _, err = run(["join", "--genesis", str(genesis), *peers, "--out", str(tmp_path / "obs")], capsys)
    assert code == 1 and "not empty" in err
    code, _, err = run(["join", "--genesis", str(genesis), f"--peer={'cd' * 32}=ws://h:1", "--out",
                        str(tmp_path / "o2")], capsys)
    assert code == 1 and "no --peer is a validator" in err
    code, _, err = run(["join", "--genesis", str(genesis), "--peer=bad", "--out", str(tmp_path / "o3")], capsys)
    assert code == 1 and "NODE_ID=wss://host:port" in err
    # Plain ws:// only where explicitly allowed (as for every node).
    plain = [p.replace("wss://", "ws://") for p in peers]
    code, _, err = run(["join", "--genesis", str(genesis), *plain, "--out", str(tmp_path / "o4")], capsys)
    assert code == 1 and "plain ws://" in err and not (tmp_path / "o4").exists()
    code, out, err = run(["join", "--genesis", str(genesis), *plain, "--out", str(tmp_path / "o5"),
                          "--allow-plaintext"], capsys)
    assert code == 0 and "ws://127.0.0.1:9101" in out, err
    assert _config(tmp_path / "o5")["p2p_allow_plaintext"] is True


@pytest.fixture
def four(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    ids = [keys.PrivateKey.from_seed(bytes([i + 1]) * 32).address for i in range(4)]
    status = {"chain_id": "c1", "validators": [{"node_id": i} for i in ids],
              "next_validators": [{"node_id": i} for i in ids]}
    monkeypatch.setattr(LedgerClient, "status", lambda self: status)
    return ids


def test_dry_run_of_a_change_prints_the_new_n_f_and_quorum(tmp_path: Path, four: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    member = tmp_path / "m.pem"
    keys.PrivateKey.generate().save(member)
    new = keys.PrivateKey.generate()
    common = ["--key", str(member), "--nonce", "0", "--chain-id", "c1", "--dry-run"]
    code, out, err = run(["gov", "propose", "add-validator", "--node-id", new.address, "--p2p-url",
                          "ws://10.0.0.5:9005", "--name", "bank5", *common], capsys)
    assert code == 0, err
    after = json.loads(out)["validator_set_after"]
    assert (after["n"], after["f"], after["quorum"]) == (5, 1, 4)
    assert after["summary"] == "after this change n=5, f=1, quorum 4"
    code, out, err = run(["gov", "propose", "remove-validator", "--node-id", four[0], *common], capsys)
    assert code == 0, err
    assert json.loads(out)["validator_set_after"]["n"] == 3


def test_a_rotation_is_signed_by_the_new_key(tmp_path: Path, four: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    member, new_file = tmp_path / "m.pem", tmp_path / "new.pem"
    keys.PrivateKey.generate().save(member)
    new = keys.PrivateKey.generate()
    new.save(new_file)
    code, out, err = run(["gov", "propose", "rotate-validator-key", "--node-id", four[1], "--new-key", str(new_file),
                          "--key", str(member), "--nonce", "0", "--chain-id", "c1", "--dry-run"], capsys)
    assert code == 0, err
    shown = json.loads(out)
    args = dict(decode_tx(shown["tx"]).payload.args)  # type: ignore[union-attr]
    assert args["new_node_id"] == new.address and args["node_id"] == four[1]
    assert keys.verify(new.address, bytes.fromhex(str(args["proof"])),
                       valset.rotation_message("c1", four[1], new.address))
    assert shown["validator_set_after"]["validators"][1] == new.address
