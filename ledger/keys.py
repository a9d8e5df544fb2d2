"""Ed25519 keys: generation, PKCS#8 PEM files, signing and verification.

An account address and a node id are both the lowercase hex of the raw 32-byte public key.

Keys, PEM files and signing use `cryptography` (OpenSSL). Verification, which every node does for
every transaction and which bounds the whole ledger's throughput, uses libsodium through PyNaCl:
about 70 us a check on the benchmark machine against about 140 us for OpenSSL's (docs/benchmarks.md).
libsodium is also the stricter of the two (it refuses non-canonical signatures and small-order keys
and R points); every node runs the same check, so nodes agree on every signature, and signatures
made by any correct Ed25519 signer verify.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from ledger.errors import Rejected

_LOWER_HEX = re.compile(r"[0-9a-f]*")
KEY_FILE_EXPECTED = ("a key file is an unencrypted Ed25519 private key in PKCS#8 PEM form, starting with "
                     "'-----BEGIN PRIVATE KEY-----'; make one with `ledgerd keys new --out FILE`")


def is_hex(text: str, length: int) -> bool:
    """`length` lowercase hex digits (checked in C: this runs for every field of every transaction)."""
    return len(text) == length and _LOWER_HEX.fullmatch(text) is not None


def is_address(text: object) -> bool:
    return isinstance(text, str) and is_hex(text, 64)


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 signing key. `address` is the hex public key."""

    key: Ed25519PrivateKey
    address: str

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls._wrap(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        """A deterministic key from 32 bytes (test vectors and simulations only)."""
        return cls._wrap(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def _wrap(cls, key: Ed25519PrivateKey) -> PrivateKey:
        return cls(key, key.public_key().public_bytes_raw().hex())

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def to_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "the PEM data") -> PrivateKey:
        """The key in `pem`; `source` names where it came from in the rejection's message."""
        # The library's own text (OpenSSL error stacks, a URL to its FAQ) says nothing a user can act
        # on; say what the file should be instead, and keep the library's reason on the exception.
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except TypeError as exc:
            raise Rejected("bad_key", f"{source} is a password-protected key; {KEY_FILE_EXPECTED}") from exc
        except ValueError as exc:
            raise Rejected("bad_key", f"{source} is not a key file; {KEY_FILE_EXPECTED}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise Rejected("bad_key", f"{source} holds a key that is not Ed25519; {KEY_FILE_EXPECTED}")
        return cls._wrap(key)

    def save(self, path: Path) -> None:
        """Write the PEM with mode 0600, refusing to overwrite an existing key."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.to_pem())

    @classmethod
    def load(cls, path: Path) -> PrivateKey:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Rejected("bad_key", f"cannot read key file {path}: {exc.strerror}") from exc
        return cls.from_pem(data, source=str(path))


def verify(address: str, signature: bytes, data: bytes) -> bool:
    """True when `signature` is `address`'s Ed25519 signature of `data`."""
    if len(address) != 64:
        return False
    try:
        public_key = bytes.fromhex(address)
    except ValueError:
        return False
    return verify_raw(public_key, signature, data)


def verify_raw(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """`verify` with the raw 32-byte public key."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        crypto_sign_open(signature + data, public_key)
    except (CryptoError, ValueError, TypeError):  # BadSignatureError is a CryptoError
        return False
    return True


def verify_many(items: list[tuple[str, bytes, bytes]]) -> list[bool]:
    """`verify` over (address, signature, data) triples: one call per batch (a verify thread's job)."""
    return [verify(address, signature, data) for address, signature, data in items]
