"""The fast path for canonical bytes (`decode_canonical_array`, `decode_canonical_tx`, canonical
blocks) against the strict decoder: it accepts only what `decode_tx` accepts, decodes it to the
same transaction, and hands everything else back (None) for the strict path to refuse or accept.
Random corruptions of real encodings probe the boundary; none may be accepted differently."""

from __future__ import annotations

import json
import random

import pytest

from ledger import keys
from ledger.block import decode_block, make_block
from ledger.errors import Rejected
from ledger.tx import (
    MAX_SAFE_INT,
    DecodeMemo,
    Issue,
    Payload,
    Record,
    Transaction,
    Transfer,
    decode_canonical_array,
    decode_canonical_tx,
    decode_tx,
    sign_tx,
)

KEY = keys.PrivateKey.from_seed(bytes(range(32)))
TO = keys.PrivateKey.from_seed(bytes(range(1, 33))).address
CHAIN = "ledger-local"

PAYLOADS: list[Payload] = [
    Transfer(TO, "LDG", 1), Transfer(TO, "A1B2C3D4E5F6", MAX_SAFE_INT), Issue("GOLD", 7),
    Issue("ZZ", MAX_SAFE_INT), Record("k", ""), Record("doc/42#v1", "sha256:" + "ab" * 32),
    Record("x" * 128, "y" * 4096), Record("a b", "~!@$%^&*()_+{}[]|:;'<>,.?/ `"),
    # Not plain ASCII: the fast path hands these to the strict decoder, which accepts them.
    Record("quote\"", "v"), Record("k", "back\\slash"), Record("caf\u00e9", "\u2603"), Record("t", "tab\t"),
]


def signed(payload: Payload, nonce: int = 0) -> Transaction:
    return sign_tx(KEY, CHAIN, nonce, payload)


def strict(raw: bytes) -> Transaction | None:
    """What the strict path makes of these bytes: the transaction, or None if it refuses them."""
    try:
        return decode_tx(json.loads(raw))
    except (ValueError, Rejected, RecursionError):
        return None


def same(a: Transaction, b: Transaction) -> bool:
    return (a.hash == b.hash and a.signing_bytes == b.signing_bytes and a.signature == b.signature
            and a.payload == b.payload and a.sender == b.sender and a.nonce == b.nonce
            and a.chain_id == b.chain_id and a.type == b.type and a.encode() == b.encode())


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_canonical_encodings_decode_to_what_the_strict_decoder_gives(payload: Payload) -> None:
    tx = signed(payload, nonce=12345)
    fast = decode_canonical_tx(tx.encode())
    reference = strict(tx.encode())
    assert reference is not None and same(reference, tx)
    plain = isinstance(payload, Transfer | Issue) or all(
        0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in payload.key + payload.value)
    if plain:
        assert fast is not None and same(fast, tx)
    else:
        assert fast is None  # escapes and non-ASCII text go the strict way


def test_an_array_is_all_canonical_or_handed_back_whole() -> None:
    txs = [signed(p, n) for n, p in enumerate(PAYLOADS[:8])]
    data = b"[" + b",".join(t.encode() for t in txs) + b"]"
    decoded = decode_canonical_array(data)
    assert decoded is not None and all(same(a, b) for a, b in zip(decoded, txs, strict=True))
    assert decode_canonical_array(b"[]") == []
    for bad in (data[:-1], data + b" ", b" " + data, data.replace(b"},{", b"}, {", 1), b"[" + txs[0].encode()
                + b",]", b"[,]", b"", b"[", json.dumps([t.to_json() for t in txs]).encode()):
        assert decode_canonical_array(bad) is None


@pytest.mark.parametrize("text", [
    # Out of range or against the rules, but matching the shape: the fast path must not accept them.
    '"amount":0,', '"amount":9007199254740992,', '"nonce":9007199254740992,', '"nonce":01,',
    '"amount":-1,', '"amount":1.0,', '"supply":0}', '"type":"issue"',
])
def test_rule_breaking_values_in_canonical_shape_are_left_to_the_strict_decoder(text: str) -> None:
    transfer, issue = signed(Transfer(TO, "LDG", 5), 3).encode(), signed(Issue("GOLD", 5)).encode()
    for raw in (transfer, issue):
        field = text.split(":")[0].encode()
        start = raw.find(field + b":")
        if start < 0:
            continue
        end = start + len(field) + 1
        while raw[end:end + 1] not in (b",", b"}"):
            end += 1
        value = text.encode()[len(field) + 1:].rstrip(b",}")
        mutated = raw[:start] + field + b":" + value + raw[end:]
        fast = decode_canonical_tx(mutated)
        reference = strict(mutated)
        assert fast is None or (reference is not None and same(fast, reference)), mutated


def test_random_corruptions_are_never_accepted_differently() -> None:
    rng = random.Random(20261201)
    originals = [signed(p, n).encode() for n, p in enumerate(PAYLOADS)]
    alphabet = b'0123456789abcdefABCDEFZ{}[]:,"\\ -.xe'
    checked = accepted = 0
    for _ in range(6000):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.5:
                raw[at] = rng.choice(alphabet)
            elif op < 0.75:
                del raw[at]
            else:
                raw.insert(at, rng.choice(alphabet))
        data = bytes(raw)
        fast = decode_canonical_tx(data)
        reference = strict(data)
        checked += 1
        if fast is not None:
            accepted += 1
            assert reference is not None and same(fast, reference), data
    assert checked == 6000 and accepted > 50  # some corruptions stay valid (a digit of the amount, say)


def test_a_remembered_transaction_is_only_reused_for_identical_bytes() -> None:
    tx = signed(Transfer(TO, "LDG", 5))
    memo = DecodeMemo()
    first = decode_canonical_tx(tx.encode(), memo)
    assert first is not None and decode_canonical_tx(tx.encode(), memo) is first
    assert decode_canonical_tx(tx.encode()) is not first  # no memo, no sharing
    # Same signature, different body: a different (invalidly signed) transaction, not the memo's.
    other = decode_canonical_tx(tx.encode().replace(b'"amount":5', b'"amount":6'), memo)
    assert other is not None and other is not first and other.hash != first.hash
    assert not other.signature_valid()


def test_canonical_blocks_decode_to_the_same_block_and_bad_ones_are_refused() -> None:
    txs = tuple(signed(p, n) for n, p in enumerate(PAYLOADS))
    block = make_block(CHAIN, 7, "ab" * 32, 1_700_000_000_000, KEY.address, txs, "cd" * 32)
    data = block.encode()
    again = decode_block(data)
    assert again.hash == block.hash and all(same(a, b) for a, b in zip(again.txs, txs, strict=True))
    memo = DecodeMemo()
    assert decode_block(data, memo=memo).hash == block.hash
    assert decode_block(data, memo=memo).txs[0] is decode_block(data, memo=memo).txs[0]
    spaced = json.dumps(json.loads(data)).encode()  # the same block, not canonical: the strict path
    assert decode_block(spaced).hash == block.hash
    swapped = data.replace(txs[0].encode(), txs[1].encode(), 1).replace(txs[1].encode(), txs[0].encode(), 2)
    for bad in (data.replace(b'"tx_count":12', b'"tx_count":11'), swapped,
                data.replace(b'"height":7', b'"height":-7'), data[:-1], data + b"x"):
        with pytest.raises(Rejected):
            decode_block(bad)


def strict_array(raw: bytes) -> list[Transaction] | None:
    try:
        items = json.loads(raw)
        return [decode_tx(item) for item in items] if isinstance(items, list) else None
    except (ValueError, Rejected, RecursionError, TypeError):
        return None


def test_remembered_transactions_are_taken_by_their_exact_bytes_and_nothing_else() -> None:
    """With a memo, a transaction met before is recognised by its signature and its exact canonical
    bytes, without the regex: even one the regex hands to the strict path (a record with a quote).
    Random corruptions of an array of remembered transactions decode as the strict decoder does,
    or are handed back."""
    txs = [signed(p, n) for n, p in enumerate(PAYLOADS)]
    memo = DecodeMemo()
    remembered = [decode_tx(tx.to_json(), memo) for tx in txs]  # as gossip would
    data = b"[" + b",".join(tx.encode() for tx in txs) + b"]"
    assert decode_canonical_array(data) is None  # the regex alone refuses the non-ASCII records
    again = decode_canonical_array(data, memo=memo)
    assert again is not None and all(a is b for a, b in zip(again, remembered, strict=True))
    rng = random.Random(15)
    accepted = 0
    for _ in range(3000):
        bad = bytearray(data)
        bad[rng.randrange(len(bad))] = rng.choice(b'0123456789abcdef",{}[]:\\x ')
        fast = decode_canonical_array(bytes(bad), memo=memo)
        if fast is not None:
            accepted += 1
            reference = strict_array(bytes(bad))
            assert reference is not None and len(fast) == len(reference), bytes(bad)
            assert all(same(a, b) for a, b in zip(fast, reference, strict=True)), bytes(bad)
    assert accepted > 50
