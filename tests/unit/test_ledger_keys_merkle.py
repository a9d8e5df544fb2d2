"""Keys as PKCS#8 PEM files, and RFC 6962 Merkle roots and inclusion proofs."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from ledger import keys
from ledger.errors import Rejected
from ledger.merkle import inclusion_proof, merkle_root, verify_inclusion


def test_pem_round_trip_and_file_mode(tmp_path: Path) -> None:
    key = keys.PrivateKey.generate()
    path = tmp_path / "k.pem"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.PrivateKey.load(path).address == key.address
    with pytest.raises(FileExistsError):
        key.save(path)


def test_bad_key_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    with pytest.raises(Rejected):
        keys.PrivateKey.load(tmp_path / "junk.pem")
    with pytest.raises(Rejected):
        keys.PrivateKey.load(tmp_path / "missing.pem")


def test_verify_rejects_wrong_length_and_wrong_key() -> None:
    key, other = keys.PrivateKey.generate(), keys.PrivateKey.generate()
    sig = key.sign(b"m")
    assert keys.verify(key.address, sig, b"m")
    assert not keys.verify(other.address, sig, b"m")
    assert not keys.verify(key.address, sig[:-1], b"m")


def _reference_root(items: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written recursively as the RFC states it."""
    if not items:
        return hashlib.sha256(b"").digest()
    if len(items) == 1:
        return hashlib.sha256(b"\x00" + items[0]).digest()
    k = 1
    while k * 2 < len(items):
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_root(items[:k]) + _reference_root(items[k:])).digest()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 33])
def test_root_matches_rfc6962_definition(n: int) -> None:
    items = [bytes([i]) * 32 for i in range(n)]
    assert merkle_root(items) == _reference_root(items)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 11])
def test_every_leaf_has_a_verifying_proof_and_tampering_fails(n: int) -> None:
    items = [bytes([i]) * 32 for i in range(n)]
    root = merkle_root(items)
    for i in range(n):
        path = inclusion_proof(items, i)
        assert verify_inclusion(items[i], i, n, path, root)
        assert not verify_inclusion(b"x" * 32, i, n, path, root)
        if n > 1:
            assert not verify_inclusion(items[i], (i + 1) % n, n, path, root)
