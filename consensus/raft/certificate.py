"""The Raft commit certificate: one leader's signature that it committed a block.

    {"engine": "raft", "term": T, "leader": "<node id>", "signature": "<hex>"}

The signature is the leader's Ed25519 signature of
`b"ledgerd-raft-commit-v1:" + canonical_json({"chain_id", "hash", "height", "term"})`.

What it proves: a validator (`leader`), acting as leader of term T, declared that this block is
the committed block at this height of this chain. What it does not prove: that a majority stored
the block, that `leader` really was the elected leader of T, or anything at all if that validator
lies. Raft tolerates crashes, not lies; under Raft every node is trusted, and this certificate is an
attributable statement by one trusted node, not a quorum proof like a PBFT certificate.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from consensus.api import Signer, Verifier
from consensus.raft.messages import MAX_SIGNATURE_BYTES
from ledger import keys
from ledger.block import Block
from ledger.encoding import canonical_json_trusted
from ledger.tx import CHAIN_ID_RE

ENGINE_NAME = "raft"
SIGNING_PREFIX = b"ledgerd-raft-commit-v1:"
CERTIFICATE_FIELDS = frozenset({"engine", "term", "leader", "signature"})


def signing_bytes(chain_id: str, height: int, block_hash: str, term: int) -> bytes:
    body = {"chain_id": chain_id, "hash": block_hash, "height": height, "term": term}
    return SIGNING_PREFIX + canonical_json_trusted(body)


def sign_commit(signer: Signer, chain_id: str, height: int, block_hash: str, term: int) -> bytes:
    return signer.sign(signing_bytes(chain_id, height, block_hash, term))


def make_certificate(term: int, leader: str, signature: bytes) -> dict[str, Any]:
    return {"engine": ENGINE_NAME, "term": term, "leader": leader, "signature": signature.hex()}


def verify_signature(
    verifier: Verifier, chain_id: str, height: int, block_hash: str, term: int, leader: str, signature: bytes
) -> bool:
    return verifier.verify(leader, signing_bytes(chain_id, height, block_hash, term), signature)


def verify_certificate(
    block: Block, certificate: Any, validators: Collection[str], verifier: Verifier
) -> bool:
    """True when `certificate` is a well-formed Raft certificate for `block` by a validator.

    Never raises on malformed input: a certificate from a peer or a file is untrusted data.
    """
    if not isinstance(certificate, dict) or set(certificate) != CERTIFICATE_FIELDS:
        return False
    term, leader, sig = certificate["term"], certificate["leader"], certificate["signature"]
    if certificate["engine"] != ENGINE_NAME or type(term) is not int or term < 1:
        return False
    if not isinstance(leader, str) or leader not in validators:
        return False
    # Any length: Ed25519 gives 64 bytes, the simulator's stand-in signatures 32.
    if not isinstance(sig, str) or not 2 <= len(sig) <= 2 * MAX_SIGNATURE_BYTES or len(sig) % 2 \
            or not keys.is_hex(sig, len(sig)):
        return False
    signature = bytes.fromhex(sig)
    header = block.header
    if not CHAIN_ID_RE.fullmatch(header.chain_id):
        return False
    return verify_signature(verifier, header.chain_id, header.height, block.hash, term, leader, signature)
