"""`propose` and `vote` transactions: the strict decoder, the canonical fast path and the decode memo
agree on them, as they do on the other types."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from ledger import keys
from ledger.block import decode_block, make_block
from ledger.errors import Rejected
from ledger.governance import decode_action
from ledger.tx import (
    DecodeMemo,
    Propose,
    Transaction,
    Vote,
    decode_canonical_array,
    decode_canonical_tx,
    decode_tx,
    sign_tx,
)

KEY = keys.PrivateKey.from_seed(bytes(range(32)))
OTHER = keys.PrivateKey.from_seed(bytes(range(1, 33))).address
CHAIN = "ledger-local"
PID = "ab" * 32


def propose(action: str, **args: Any) -> Propose:
    return Propose(*decode_action(action, args))


PAYLOADS: list[Propose | Vote] = [
    Vote(PID, True), Vote(PID, False),
    propose("freeze-account", account=OTHER), propose("add-member", account=OTHER, weight=7),
    propose("set-threshold", numerator=2, denominator=3), propose("set-policy", accounts="allowlist"),
    propose("set-policy", accounts="open", issue="issuers"), propose("freeze-asset", asset="GOLD"),
]


def strict(raw: bytes) -> Transaction | None:
    try:
        return decode_tx(json.loads(raw))
    except (ValueError, Rejected, RecursionError):
        return None


def same(a: Transaction, b: Transaction) -> bool:
    return (a.hash == b.hash and a.signing_bytes == b.signing_bytes and a.signature == b.signature
            and a.payload == b.payload and a.type == b.type and a.encode() == b.encode())


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_governance_transactions_round_trip_and_votes_take_the_fast_path(payload: Propose | Vote) -> None:
    tx = sign_tx(KEY, CHAIN, 3, payload)
    assert tx.type == ("vote" if isinstance(payload, Vote) else "propose")
    assert tx.signature_valid()
    reference = strict(tx.encode())
    assert reference is not None and same(reference, tx)
    fast = decode_canonical_tx(tx.encode())
    if isinstance(payload, Vote):
        assert fast is not None and same(fast, tx)
    else:
        assert fast is None  # proposals are rare: the strict decoder reads them
    # Through a block too (the array falls back whole when one proposal is in it).
    txs = tuple(sign_tx(KEY, CHAIN, n, p) for n, p in enumerate(PAYLOADS))
    block = make_block(CHAIN, 2, "cd" * 32, 1_700_000_000_000, KEY.address, txs, "ef" * 32)
    assert decode_block(block.encode()).hash == block.hash
    votes = b"[" + b",".join(t.encode() for t in txs[:2]) + b"]"
    decoded = decode_canonical_array(votes)
    assert decoded is not None and [t.hash for t in decoded] == [t.hash for t in txs[:2]]


@pytest.mark.parametrize(("payload", "code"), [
    ({"proposal": PID, "approve": 1}, "malformed"),
    ({"proposal": PID, "approve": "yes"}, "malformed"),
    ({"proposal": "AB" * 32, "approve": True}, "malformed"),
    ({"proposal": PID}, "malformed"),
])
def test_bad_votes_are_refused(payload: dict[str, Any], code: str) -> None:
    obj = sign_tx(KEY, CHAIN, 0, Vote(PID, True)).to_json()
    obj["body"]["payload"] = payload
    with pytest.raises(Rejected) as info:
        decode_tx(obj)
    assert info.value.code == code


def test_bad_proposals_are_refused_with_invalid_proposal() -> None:
    obj = sign_tx(KEY, CHAIN, 0, propose("freeze-account", account=OTHER)).to_json()
    obj["body"]["payload"] = {"action": "freeze-account", "args": {"account": OTHER, "why": "x"}}
    with pytest.raises(Rejected) as info:
        decode_tx(obj)
    assert info.value.code == "invalid_proposal" and "why" in info.value.message
    obj["body"]["payload"] = {"action": "freeze-account"}
    with pytest.raises(Rejected) as info:
        decode_tx(obj)
    assert info.value.code == "malformed"


def test_the_memo_never_accepts_a_boolean_or_float_where_a_proposal_has_an_integer() -> None:
    memo = DecodeMemo()
    tx = sign_tx(KEY, CHAIN, 0, propose("add-member", account=OTHER, weight=1))
    assert decode_tx(tx.to_json(), memo) == tx  # remembered now
    for fake in (True, 1.0):
        obj = tx.to_json()
        obj["body"]["payload"]["args"]["weight"] = fake
        assert obj == tx.to_json()  # Python's == cannot tell them apart
        with pytest.raises(Rejected):
            decode_tx(obj, memo)
    vote = sign_tx(KEY, CHAIN, 1, Vote(PID, True))
    assert decode_tx(vote.to_json(), memo) == vote
    obj = vote.to_json()
    obj["body"]["payload"]["approve"] = 1
    with pytest.raises(Rejected):
        decode_tx(obj, memo)


def test_random_corruptions_of_votes_are_never_accepted_differently() -> None:
    rng = random.Random(4242)
    originals = [sign_tx(KEY, CHAIN, n, p).encode() for n, p in enumerate(PAYLOADS)]
    alphabet = b'0123456789abcdeftrufls{}[]:,"\\ -.'
    accepted = 0
    for _ in range(3000):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 2)):
            at = rng.randrange(len(raw))
            if rng.random() < 0.6:
                raw[at] = rng.choice(alphabet)
            else:
                del raw[at]
        data = bytes(raw)
        fast = decode_canonical_tx(data)
        reference = strict(data)
        if fast is not None:
            accepted += 1
            assert reference is not None and same(fast, reference), data
    assert accepted > 10
