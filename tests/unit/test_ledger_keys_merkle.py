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
    assert not keys.verify(key.address, sig, b"n")
    assert not keys.verify("zz" * 32, sig, b"m")


# The group order of Ed25519 (RFC 8032 section 5.1): S must be below it.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


def test_a_malleated_signature_is_refused() -> None:
    """RFC 8032 5.1.7: a verifier checks 0 <= S < L. S + L verifies the same equation, so a
    verifier that skipped the check would accept a second signature (and hash) for one payment."""
    key = keys.PrivateKey.generate()
    sig = key.sign(b"pay bob 10")
    s = int.from_bytes(sig[32:], "little") + ED25519_L
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert keys.verify(key.address, sig, b"pay bob 10")
    assert not keys.verify(key.address, malleated, b"pay bob 10")


def test_a_small_order_public_key_verifies_nothing() -> None:
    """The identity point as a public key with R = identity and S = 0 satisfies the verification
    equation for every message; libsodium refuses small-order keys, so no one can forge for it."""
    identity = (1).to_bytes(32, "little").hex()
    forged = (1).to_bytes(32, "little") + bytes(32)
    assert not keys.verify(identity, forged, b"anything")


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
