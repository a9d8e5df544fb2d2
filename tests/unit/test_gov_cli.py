"""`ledgerd testnet` writes a committee, and `ledgerd gov` parses and signs like `ledgerd tx`: usage
errors exit 2 with one line, --dry-run with --nonce and --chain-id needs no node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.testnet import make_testnet
from ledger.genesis import Genesis
from ledger.keys import PrivateKey
from ledger.tx import Propose, Vote, decode_tx
from tests.helpers.cli import run

ADDR = "ab" * 32


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path)
    return path


def test_testnet_writes_committee_keys_and_a_two_of_three_genesis(tmp_path: Path) -> None:
    net = make_testnet(tmp_path / "net", validators=1, accounts=1, proposal_lifetime=7)
    index = json.loads((tmp_path / "net" / "committee" / "index.json").read_text())
    assert [e["name"] for e in index] == ["member0", "member1", "member2"]
    assert [PrivateKey.load(p).address for p in net.member_files] == [e["address"] for e in index]
    genesis = Genesis.load(net.node_homes[0] / "genesis.json")
    gov = genesis.governance
    assert gov is not None and (gov.numerator, gov.denominator, gov.lifetime) == (2, 3, 7)
    assert gov.members == tuple((e["address"], 1) for e in index)
    none = make_testnet(tmp_path / "bare", validators=1, accounts=1, committee=0)
    assert none.genesis.governance is None and not (tmp_path / "bare" / "committee").exists()


def test_dry_run_signs_a_proposal_and_a_vote_offline(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["gov", "propose", "set-threshold", "--numerator", "3", "--denominator", "4",
                          "--key", str(key_file), "--nonce", "5", "--chain-id", "c1", "--dry-run"], capsys)
    assert code == 0, err
    tx = decode_tx(json.loads(out))
    assert tx.nonce == 5 and tx.payload == Propose("set-threshold", (("denominator", 4), ("numerator", 3)))
    assert tx.hash in err
    code, out, err = run(["gov", "vote", ADDR, "--reject", "--key", str(key_file), "--nonce", "0",
                          "--chain-id", "c1", "--dry-run"], capsys)
    assert code == 0, err
    assert decode_tx(json.loads(out)).payload == Vote(ADDR, False)


@pytest.mark.parametrize("argv", [
    ["gov"],
    ["gov", "propose"],
    ["gov", "propose", "launch", "--key", "k"],
    ["gov", "propose", "freeze-account", "--key", "k"],
    ["gov", "propose", "freeze-account", "--account", "zz", "--key", "k"],
    ["gov", "propose", "add-member", "--account", ADDR, "--weight", "0", "--key", "k"],
    ["gov", "propose", "grant-role", "--account", ADDR, "--role", "admin", "--key", "k"],
    ["gov", "propose", "set-policy", "--accounts", "closed", "--key", "k"],
    ["gov", "vote", ADDR, "--key", "k"],
    ["gov", "vote", ADDR, "--approve", "--reject", "--key", "k"],
    ["gov", "vote", "xyz", "--approve", "--key", "k"],
    ["gov", "show", "xyz"],
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err


def test_set_policy_needs_an_option(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["gov", "propose", "set-policy", "--key", str(key_file), "--nonce", "0",
                        "--chain-id", "c1", "--dry-run"], capsys)
    assert code == 1 and "--accounts" in err
