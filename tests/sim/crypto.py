"""Fast stand-ins for Ed25519 in the simulator: HMAC-SHA256 with a secret per node.

Each node's signer holds only its own secret; the shared verifier knows them all. A Byzantine node
is handed only its own signer, so it can sign anything as itself but nothing as anyone else, which
is the property the engines rely on. Signing is about a hundred times cheaper than Ed25519, which
is what lets thousands of seeds run in minutes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def node_id(index: int) -> str:
    """A 64-hex node id, shaped like an Ed25519 public key so that block headers accept it."""
    return hashlib.sha256(b"ledgerd-sim-node:%d" % index).hexdigest()


def _secret(node: str) -> bytes:
    return hashlib.sha256(b"ledgerd-sim-secret:" + node.encode()).digest()


class HmacSigner:
    def __init__(self, node: str) -> None:
        self.node_id = node
        self._secret = _secret(node)

    def sign(self, data: bytes) -> bytes:
        return hmac.digest(self._secret, data, "sha256")


class HmacVerifier:
    def __init__(self, nodes: Sequence[str]) -> None:
        self._secrets = {n: _secret(n) for n in nodes}

    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(node)
        return secret is not None and hmac.compare_digest(hmac.digest(secret, data, "sha256"), signature)
