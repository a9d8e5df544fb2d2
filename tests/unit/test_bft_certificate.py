"""Commit certificates: 2f + 1 distinct, valid commit seals prove a block final (real Ed25519)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from consensus import factory
from consensus.api import Ed25519Verifier
from consensus.bft.certificate import build_certificate, verify_certificate
from consensus.bft.messages import Kind, Vote, signing_bytes
from ledger import keys
from ledger.block import Block, make_block

KEYS = [keys.PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = [k.address for k in KEYS]
OUTSIDER = keys.PrivateKey.from_seed(b"\x99" * 32)
VERIFIER = Ed25519Verifier()


def block(chain: str = "chain-a", height: int = 5) -> Block:
    return make_block(chain, height, "11" * 32, 1_000, VALIDATORS[1], (), "22" * 32)


def seal(key: keys.PrivateKey, b: Block, round: int = 0, chain: str | None = None) -> dict[str, str]:
    data = signing_bytes(chain or b.header.chain_id, Kind.COMMIT, b.height, round, b.hash)
    return {"validator": key.address, "signature": key.sign(data).hex()}


def certificate(b: Block, signers: list[keys.PrivateKey], round: int = 0) -> dict[str, Any]:
    seals = [seal(k, b, round) for k in signers]
    return {"height": b.height, "round": round, "block_hash": b.hash, "seals": seals}


def test_a_quorum_of_seals_proves_the_block_final() -> None:
    b = block()
    assert verify_certificate(b, certificate(b, KEYS[:3]), VALIDATORS, VERIFIER)
    assert verify_certificate(b, certificate(b, KEYS), VALIDATORS, VERIFIER)
    assert factory.verify_certificate("pbft", b, certificate(b, KEYS[1:]), VALIDATORS, VERIFIER)


def test_build_certificate_orders_seals_by_validator_and_verifies() -> None:
    b = block()
    data = signing_bytes("chain-a", Kind.COMMIT, b.height, 2, b.hash)
    votes = [Vote(i, KEYS[i].sign(data)) for i in (3, 0, 2)]
    cert = build_certificate(b, 2, votes, VALIDATORS)
    assert [s["validator"] for s in cert["seals"]] == [VALIDATORS[0], VALIDATORS[2], VALIDATORS[3]]
    assert verify_certificate(b, cert, VALIDATORS, VERIFIER)


def test_too_few_seals_do_not_prove_finality() -> None:
    b = block()
    assert not verify_certificate(b, certificate(b, KEYS[:2]), VALIDATORS, VERIFIER)
    assert not verify_certificate(b, certificate(b, []), VALIDATORS, VERIFIER)


def test_a_seal_counts_once_however_often_it_appears() -> None:
    b = block()
    cert = certificate(b, [KEYS[0], KEYS[1], KEYS[1]])
    assert not verify_certificate(b, cert, VALIDATORS, VERIFIER)


def test_foreign_and_misdirected_seals_are_rejected() -> None:
    b = block()
    foreign = certificate(b, KEYS[:2])
    foreign["seals"].append(seal(OUTSIDER, b))
    assert not verify_certificate(b, foreign, VALIDATORS, VERIFIER)
    # A seal in a validator's name but signed by someone else.
    forged = certificate(b, KEYS[:2])
    forged["seals"].append({"validator": VALIDATORS[2], "signature": seal(OUTSIDER, b)["signature"]})
    assert not verify_certificate(b, forged, VALIDATORS, VERIFIER)
    # Seals for another round than the certificate claims, or another chain.
    mixed = certificate(b, KEYS[:3])
    mixed["seals"][2] = seal(KEYS[2], b, round=1)
    assert not verify_certificate(b, mixed, VALIDATORS, VERIFIER)
    other_chain = certificate(b, KEYS[:2])
    other_chain["seals"].append(seal(KEYS[2], b, chain="chain-b"))
    assert not verify_certificate(b, other_chain, VALIDATORS, VERIFIER)


def test_a_certificate_is_bound_to_its_block() -> None:
    b = block()
    cert = certificate(b, KEYS[:3])
    assert not verify_certificate(block(height=6), cert, VALIDATORS, VERIFIER)
    assert not verify_certificate(block(chain="chain-b"), cert, VALIDATORS, VERIFIER)
    # Under another validator set the same seals prove nothing.
    assert not verify_certificate(b, cert, VALIDATORS[1:] + [OUTSIDER.address], VERIFIER)


@pytest.mark.parametrize("mutate", [
    lambda c: c.pop("round"),
    lambda c: c.update(extra=1),
    lambda c: c.update(round=-1),
    lambda c: c.update(round="0"),
    lambda c: c.update(height=True),
    lambda c: c.update(seals="none"),
    lambda c: c["seals"].append("seal"),
    lambda c: c["seals"][0].update(signature="zz"),
    lambda c: c["seals"][0].update(signature=c["seals"][0]["signature"].upper()),
    lambda c: c["seals"][0].update(validator=7),
    lambda c: c["seals"][0].pop("validator"),
    lambda c: c["seals"].extend([c["seals"][0]] * 10),
])
def test_malformed_certificates_are_invalid_not_errors(mutate: Any) -> None:
    b = block()
    cert = copy.deepcopy(certificate(b, KEYS))
    mutate(cert)
    assert not verify_certificate(b, cert, VALIDATORS, VERIFIER)
    assert not verify_certificate(b, "not a certificate", VALIDATORS, VERIFIER)
    assert not verify_certificate(b, cert, [], VERIFIER)


def test_the_factory_refuses_an_unknown_engine() -> None:
    b = block()
    with pytest.raises(ValueError, match="unknown consensus engine"):
        factory.verify_certificate("pow", b, certificate(b, KEYS), VALIDATORS, VERIFIER)
