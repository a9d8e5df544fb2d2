"""`ledgerd genesis` refusals: each is one clear line, and nothing is overwritten or half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from ledger import keys


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def node_info(capsys: pytest.CaptureFixture[str], home: Path, name: str, port: int) -> str:
    code, out, _ = run(capsys, "genesis", "node-info", "--home", str(home), "--name", name,
                       "--p2p-url", f"wss://{name}.example:{port}")
    assert code == 0
    return out.strip()


def test_node_info_prints_the_public_identity_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = node_info(capsys, tmp_path / "a", "bank-a", 9001)
    info = json.loads(line)
    key = keys.PrivateKey.load(tmp_path / "a" / "node_key.pem")
    assert info == {"name": "bank-a", "node_id": key.address, "p2p_url": "wss://bank-a.example:9001"}
    assert (tmp_path / "a" / "node_key.pem").stat().st_mode & 0o077 == 0
    code, _, err = run(capsys, "genesis", "node-info", "--home", str(tmp_path / "b"), "--name", "b",
                       "--p2p-url", "http://b:1")
    assert code == 1 and "must be wss://HOST:PORT" in err


def test_the_coordinator_steps_refuse_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    draft = str(tmp_path / "draft.json")
    assert run(capsys, "genesis", "init", "--draft", draft, "--chain-id", "c-1")[0] == 0
    code, _, err = run(capsys, "genesis", "init", "--draft", draft, "--chain-id", "c-1")
    assert code == 1 and "refusing to overwrite" in err
    code, _, err = run(capsys, "genesis", "finalize", "--draft", draft, "--out", str(tmp_path / "out"))
    assert code == 1 and "validators must be a non-empty list" in err
    assert not (tmp_path / "out" / "genesis.json").exists()
    code, _, err = run(capsys, "genesis", "add-validator", "--draft", draft, "--info", "{not json")
    assert code == 1 and "--info is not the JSON line" in err
    code, _, err = run(capsys, "genesis", "init", "--draft", str(tmp_path / "d2.json"), "--chain-id", "c",
                       "--account", "nothex=5")
    assert code == 1 and "is not an address" in err and not (tmp_path / "d2.json").exists()


def test_node_home_refuses_a_key_that_is_not_a_validator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    draft = str(tmp_path / "draft.json")
    run(capsys, "genesis", "init", "--draft", draft, "--chain-id", "c-1")
    run(capsys, "genesis", "add-validator", "--draft", draft, "--info", node_info(capsys, tmp_path / "a", "a", 9001))
    code, out, _ = run(capsys, "genesis", "finalize", "--draft", draft, "--out", str(tmp_path / "rel"))
    assert code == 0
    digest = out.strip()
    node_info(capsys, tmp_path / "stranger", "s", 9002)
    release = ["--genesis", str(tmp_path / "rel" / "genesis.json"), "--peers", str(tmp_path / "rel" / "peers.json")]
    code, _, err = run(capsys, "genesis", "node-home", "--home", str(tmp_path / "stranger"), *release,
                       "--expect-hash", digest)
    assert code == 1 and "is not a validator" in err and not (tmp_path / "stranger" / "config.toml").exists()
    code, out, _ = run(capsys, "genesis", "node-home", "--home", str(tmp_path / "a"), *release,
                       "--expect-hash", digest)
    assert code == 0 and out.strip() == digest and (tmp_path / "a" / "config.toml").exists()
