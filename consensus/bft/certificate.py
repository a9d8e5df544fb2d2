"""Commit certificates: the quorum of commit seals stored with each block, and their verification.

A certificate is JSON-able and self-contained, so that block sync, the REST API or an auditor
can prove a block final from the block, the genesis validator list and a signature verifier:

    {"height": 7, "round": 0, "block_hash": "<64 hex>",
     "seals": [{"validator": "<node id>", "signature": "<hex>"}, ...]}

Each seal is the validator's COMMIT signature over `messages.signing_bytes(chain_id, COMMIT,
height, round, block_hash)`, chain_id taken from the block header. All seals are from one round;
there must be at least a quorum (2f + 1 of 3f + 1) of them, from distinct validators, every one
valid. A malformed certificate is simply not valid: verification never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from consensus.api import Verifier
from consensus.bft.messages import MAX_SIGNATURE_BYTES, Kind, Vote, signing_bytes
from consensus.bft.rounds import MAX_ROUND, quorum_size
from ledger.block import Block

CERTIFICATE_FIELDS = ("block_hash", "height", "round", "seals")


def build_certificate(
    block: Block, round: int, seals: Iterable[Vote], validators: Sequence[str],
) -> dict[str, Any]:
    """The certificate for `block` from COMMIT seals of `round` (already verified by the caller)."""
    ordered = sorted(seals, key=lambda v: v.author)
    return {
        "height": block.height,
        "round": round,
        "block_hash": block.hash,
        "seals": [{"validator": validators[v.author], "signature": v.signature.hex()} for v in ordered],
    }


def check_certificate(
    block: Block, certificate: Any, validators: Sequence[str], verifier: Verifier, quorum: int,
) -> bool:
    """True when `certificate` holds at least `quorum` valid, distinct seals for `block`."""
    if not isinstance(certificate, dict) or sorted(certificate) != list(CERTIFICATE_FIELDS):
        return False
    height, round = certificate["height"], certificate["round"]
    block_hash, seals = certificate["block_hash"], certificate["seals"]
    if type(height) is not int or height != block.height or block_hash != block.hash:
        return False
    if type(round) is not int or not 0 <= round <= MAX_ROUND:
        return False
    if not isinstance(seals, list) or len(seals) > len(validators):
        return False
    members = set(validators)
    seen: set[str] = set()
    message = signing_bytes(block.header.chain_id, Kind.COMMIT, height, round, block.hash)
    for seal in seals:
        if not isinstance(seal, dict) or sorted(seal) != ["signature", "validator"]:
            return False
        validator, sig_hex = seal["validator"], seal["signature"]
        if not isinstance(validator, str) or validator not in members or validator in seen:
            return False
        if not isinstance(sig_hex, str) or len(sig_hex) > 2 * MAX_SIGNATURE_BYTES:
            return False
        try:
            signature = bytes.fromhex(sig_hex)
        except ValueError:
            return False
        if signature.hex() != sig_hex or not verifier.verify(validator, message, signature):
            return False
        seen.add(validator)
    return len(seen) >= quorum


def verify_certificate(block: Block, certificate: Any, validators: Sequence[str], verifier: Verifier) -> bool:
    """True when `certificate` proves `block` final under the validator set `validators`."""
    if not validators:
        return False
    return check_certificate(block, certificate, validators, verifier, quorum_size(len(validators)))
