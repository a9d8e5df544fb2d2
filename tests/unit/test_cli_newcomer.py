"""What a newcomer meets first: key-file messages that say what a key file is, no abbreviated options,
help for every positional argument, and a localnet that never silently starts a chain other than the
one asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.localnet import prepare
from ledger.errors import Rejected
from ledger.keys import PrivateKey
from node.config import ConfigError
from tests.helpers.cli import run

ADDR = "ab" * 32


# --- key files -----------------------------------------------------------------------------------


def _assert_says_what_a_key_file_is(message: str, path: Path) -> None:
    assert str(path) in message
    assert "PKCS#8 PEM" in message and "BEGIN PRIVATE KEY" in message
    assert "ledgerd keys new --out FILE" in message
    # Nothing of the crypto library's own wording: no OpenSSL error stack, no link to its FAQ.
    assert "http" not in message and "OpenSSL" not in message and "unsupported" not in message.lower()


@pytest.mark.parametrize("content", [
    b"hello, I am not a key\n",
    b"",
    b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    b"\x00\x01\x02 binary",
])
def test_a_file_that_is_no_key_says_what_a_key_file_is(tmp_path: Path, content: bytes,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notakey.pem"
    path.write_bytes(content)
    with pytest.raises(Rejected) as caught:
        PrivateKey.load(path)
    _assert_says_what_a_key_file_is(caught.value.message, path)

    code, _, err = run(["keys", "show", str(path)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    _assert_says_what_a_key_file_is(err, path)


def test_an_encrypted_or_non_ed25519_key_says_what_a_key_file_is(tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(Rejected) as caught:
        PrivateKey.load(encrypted)
    assert "password-protected" in caught.value.message
    _assert_says_what_a_key_file_is(caught.value.message, encrypted)

    other = tmp_path / "ecdsa.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(Rejected) as caught:
        PrivateKey.load(other)
    assert "not Ed25519" in caught.value.message
    _assert_says_what_a_key_file_is(caught.value.message, other)


# --- the parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "abbreviation"), [
    (["status", "--nod", "http://127.0.0.1:1"], "--nod"),
    (["localnet", "--valid", "1", "--dir", "/nonexistent/ledgerd-test"], "--valid"),
    (["tx", "transfer", "--key", "/nonexistent/k.pem", "--to", ADDR, "--amount", "1", "--dry", "--nonce", "0",
      "--chain-id", "c"], "--dry"),
    (["bench", "--nodes", "http://127.0.0.1:1", "--dur", "1"], "--dur"),
])
def test_abbreviated_long_options_are_refused(argv: list[str], abbreviation: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert "unrecognized arguments" in err and abbreviation in err and len(err.strip().splitlines()) == 1


def test_keys_show_explains_its_file_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["keys", "show", "--help"], capsys)
    assert code == 0
    described = out.split("positional arguments:")[1].split("options:")[0]
    assert "FILE" in described and "PKCS#8 PEM" in described and "ledgerd keys new" in described


# --- localnet on an existing directory -----------------------------------------------------------


@pytest.fixture
def one_validator_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "net"
    prepare(directory, 1, "pbft", base_port=18001, accounts=1)
    return directory


def test_localnet_refuses_another_validator_count_than_the_directory_holds(
        one_validator_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        prepare(one_validator_dir, 4, None, base_port=18001, accounts=1)
    message = str(caught.value)
    assert "1-validator" in message and "--validators 4" in message and "--dir" in message
    assert str(one_validator_dir) in message


def test_localnet_refuses_another_engine_than_the_directory_holds(one_validator_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        prepare(one_validator_dir, None, "raft", base_port=18001, accounts=1)
    assert "pbft" in str(caught.value) and "--consensus raft" in str(caught.value)


def test_localnet_starts_an_existing_directory_as_it_is_when_nothing_is_asked(one_validator_dir: Path) -> None:
    assert [h.name for h in prepare(one_validator_dir, None, None, base_port=18001, accounts=1)] == ["node0"]
    assert [h.name for h in prepare(one_validator_dir, 1, "pbft", base_port=18001, accounts=1)] == ["node0"]


# Bounded: were the refusal gone, localnet would start the old chain in-process and run until stopped.
@pytest.mark.timeout(30)
def test_localnet_with_a_mismatched_count_exits_1_before_starting_anything(
        one_validator_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["localnet", "--dir", str(one_validator_dir), "--validators", "3"], capsys)
    assert code == 1 and "starting" not in out
    assert "already holds a 1-validator" in err and len(err.strip().splitlines()) == 1


def test_a_new_localnet_directory_gets_four_validators_by_default(tmp_path: Path) -> None:
    homes = prepare(tmp_path / "fresh", None, None, base_port=18001, accounts=1)
    assert [h.name for h in homes] == ["node0", "node1", "node2", "node3"]
