"""The CLI's contract with a person at a terminal: usage errors exit 2 with one line on stderr, runtime
failures exit 1 with one line, successes exit 0. In-process (main(argv)) so the many cases stay fast;
tests/integration/test_cli_node.py runs the real console script against a real node.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ledger.keys import PrivateKey
from tests.helpers.cli import run

ADDR = "ab" * 32


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "k.pem"
    PrivateKey.generate().save(path)
    return path


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here once the socket is closed


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["keys"],
    ["tx"],
    ["testnet"],
    ["testnet", "--out", "x", "--validators", "0"],
    ["testnet", "--out", "x", "--consensus", "paxos"],
    ["start"],
    ["start", "--home", "x", "--rest-port", "70000"],
    ["start", "--home", "x", "--log-format", "xml"],
    ["tx", "transfer", "--to", ADDR, "--amount", "0", "--key", "k"],
    ["tx", "transfer", "--to", ADDR, "--amount", "-3", "--key", "k"],
    ["tx", "transfer", "--to", ADDR, "--amount", "1.5", "--key", "k"],
    ["tx", "transfer", "--to", ADDR, "--amount", "ten", "--key", "k"],
    ["tx", "transfer", "--to", ADDR, "--amount", str(2**53), "--key", "k"],
    ["tx", "transfer", "--to", "xyz", "--amount", "1", "--key", "k"],
    ["tx", "transfer", "--to", ADDR, "--amount", "1"],
    ["tx", "transfer", "--to", ADDR, "--amount", "1", "--key", "k", "--node", "ftp://host"],
    ["tx", "transfer", "--to", ADDR, "--amount", "1", "--key", "k", "--nonce", "-1"],
    ["tx", "issue", "--asset", "gold", "--supply", "5", "--key", "k"],
    ["tx", "issue", "--asset", "GOLD", "--key", "k"],
    ["tx", "record", "--record-key", "", "--value", "v", "--key", "k"],
    ["tx", "record", "--record-key", "k" * 129, "--value", "v", "--key", "k"],
    ["tx", "record", "--record-key", "doc", "--value", "v" * 4097, "--key", "k"],
    ["status", "--node", "http://host/path"],
    ["localnet", "--validators", "-1"],
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith("ledgerd") and "error:" in line and "--help" in line
    assert out == ""


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for command in ("testnet", "start", "localnet", "keys", "tx", "status"):
        assert command in out
    code, out, _ = run(["tx", "transfer", "--help"], capsys)
    assert code == 0 and "--amount" in out and "example:" in out


def test_keys_new_then_show_print_the_same_address(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alice.pem"
    code, out, _ = run(["keys", "new", "--out", str(path)], capsys)
    assert code == 0
    address = out.strip()
    assert address == PrivateKey.load(path).address
    assert path.stat().st_mode & 0o777 == 0o600
    code, out, _ = run(["keys", "show", str(path)], capsys)
    assert (code, out.strip()) == (0, address)


def test_keys_new_never_overwrites(key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = key_file.read_bytes()
    code, _, err = run(["keys", "new", "--out", str(key_file)], capsys)
    assert code == 1 and "already exists" in one_line(err)
    assert key_file.read_bytes() == before


@pytest.mark.parametrize("content", [None, b"not a key", b""])
def test_keys_show_of_a_bad_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         content: bytes | None) -> None:
    path = tmp_path / "bad.pem"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run(["keys", "show", str(path)], capsys)
    assert code == 1
    assert one_line(err).startswith("ledgerd: error:")


def test_unreachable_node_exits_1(key_file: Path, dead_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["status", "--node", dead_url], capsys)
    assert code == 1 and "cannot reach the node" in one_line(err)
    code, _, err = run(["tx", "transfer", "--to", ADDR, "--amount", "1", "--key", str(key_file),
                        "--node", dead_url], capsys)
    assert code == 1 and "cannot reach the node" in one_line(err)


def test_tx_with_a_missing_key_file_exits_1(tmp_path: Path, dead_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.pem")
    argv = ["tx", "issue", "--asset", "GOLD", "--supply", "5", "--key", missing, "--node", dead_url]
    code, _, err = run(argv, capsys)
    assert code == 1 and "cannot read key file" in one_line(err)


def test_start_with_a_missing_home_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["start", "--home", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and "does not exist" in one_line(err)


def test_testnet_into_a_non_empty_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(["testnet", "--validators", "1", "--out", str(tmp_path)], capsys)
    assert code == 1 and "not empty" in one_line(err)
