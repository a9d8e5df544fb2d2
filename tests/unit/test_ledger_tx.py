"""Transactions against the contract: canonical signing bytes, hash, signature and strict decoding."""

from __future__ import annotations

import copy
import json

import pytest

from ledger import keys
from ledger.encoding import canonical_json
from ledger.errors import Rejected
from ledger.tx import DecodeMemo, Issue, Record, Transfer, decode_tx, sign_tx

SEED = bytes(range(32))
ADDRESS = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
TO = "ab" * 32

# Contract vector: fixed key, body, signing bytes, hash and signature, checked in.
VECTOR_BODY = {
    "chain_id": "ledger-local", "sender": ADDRESS, "nonce": 0, "type": "transfer",
    "payload": {"to": TO, "asset": "LDG", "amount": 10},
}
VECTOR_SIGNING = (
    b'ledgerd-tx-v1:{"chain_id":"ledger-local","nonce":0,"payload":{"amount":10,"asset":"LDG","to":"'
    + TO.encode() + b'"},"sender":"' + ADDRESS.encode() + b'","type":"transfer"}'
)
VECTOR_HASH = "45d4bf5ce77a5eb16b4e631576552f82bb1d82897a147dc4f6eb4048c47850b0"
VECTOR_SIG = (
    "fd0d46d9eab6bfa79dd3e35c162da68def51731ba61628894a2a4bd2d3e62aa0"
    "be3f043a05f672086b810f77d991e2164dd1f3a5843f79d6ca9f7927f8324701"
)
RECORD_HASH = "c13ad4ba4d11344ad0cde40aa1a7bbcca2080a2ec05f2d314eca836e8dfc56c0"


def vector_tx() -> dict:
    return {"body": copy.deepcopy(VECTOR_BODY), "signature": VECTOR_SIG}


def test_contract_vector_signing_bytes_hash_and_signature() -> None:
    key = keys.PrivateKey.from_seed(SEED)
    assert key.address == ADDRESS
    tx = sign_tx(key, "ledger-local", 0, Transfer(TO, "LDG", 10))
    assert tx.signing_bytes == VECTOR_SIGNING
    assert tx.hash == VECTOR_HASH
    assert tx.signature.hex() == VECTOR_SIG  # Ed25519 signatures are deterministic
    decoded = decode_tx(vector_tx())
    assert decoded.hash == VECTOR_HASH and decoded.signature_valid()


def test_record_vector_is_utf8_not_escaped() -> None:
    tx = sign_tx(keys.PrivateKey.from_seed(SEED), "ledger-local", 7, Record("doc/42", "sha256:00ff é"))
    assert b"\xc3\xa9" in tx.signing_bytes
    assert tx.hash == RECORD_HASH


def test_key_order_and_whitespace_of_the_input_do_not_change_the_hash() -> None:
    text = json.dumps(vector_tx(), indent=4, sort_keys=False)
    reordered = json.loads(text)
    reordered["body"] = dict(reversed(list(reordered["body"].items())))
    assert decode_tx(reordered).hash == VECTOR_HASH


def test_signature_over_other_bytes_is_invalid() -> None:
    obj = vector_tx()
    obj["body"]["payload"]["amount"] = 11
    assert not decode_tx(obj).signature_valid()
    obj = vector_tx()
    obj["signature"] = "00" * 64
    assert not decode_tx(obj).signature_valid()


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda t: t.pop("signature"), "malformed"),
        (lambda t: t.update(extra=1), "malformed"),
        (lambda t: t["body"].update(fee=1), "malformed"),
        (lambda t: t["body"]["payload"].update(memo="x"), "malformed"),
        (lambda t: t["body"].update(nonce="0"), "malformed"),
        (lambda t: t["body"].update(nonce=-1), "malformed"),
        (lambda t: t["body"].update(nonce=1.0), "malformed"),
        (lambda t: t["body"].update(nonce=True), "malformed"),
        (lambda t: t["body"].update(nonce=0.0), "malformed"),  # == 0: must not hit the decode memo
        (lambda t: t["body"].update(nonce=False), "malformed"),  # == 0 as well
        (lambda t: t["body"].update(sender=ADDRESS.upper()), "malformed"),
        (lambda t: t["body"].update(sender=ADDRESS[:-2]), "malformed"),
        (lambda t: t["body"].update(type="mint"), "malformed"),
        (lambda t: t["body"].update(chain_id=""), "malformed"),
        (lambda t: t["body"].update(chain_id="x" * 65), "malformed"),
        (lambda t: t.update(signature=VECTOR_SIG[:-1]), "malformed"),
        (lambda t: t.update(signature=VECTOR_SIG.upper()), "malformed"),
        (lambda t: t["body"]["payload"].update(amount=0), "invalid_amount"),
        (lambda t: t["body"]["payload"].update(amount=-5), "invalid_amount"),
        (lambda t: t["body"]["payload"].update(amount=2**53), "invalid_amount"),
        (lambda t: t["body"]["payload"].update(amount=10.0), "invalid_amount"),
        (lambda t: t["body"]["payload"].update(amount="10"), "invalid_amount"),
        (lambda t: t["body"]["payload"].update(amount=True), "invalid_amount"),
        (lambda t: t["body"]["payload"].update(asset="ldg"), "invalid_asset"),
        (lambda t: t["body"]["payload"].update(asset="L"), "invalid_asset"),
        (lambda t: t["body"]["payload"].update(asset="A" * 13), "invalid_asset"),
        (lambda t: t["body"]["payload"].update(to="zz" * 32), "malformed"),
    ],
)
def test_off_contract_input_is_rejected_with_a_stable_code(mutate, code) -> None:
    memo = DecodeMemo()
    decode_tx(vector_tx(), memo)  # the valid original is in the decode memo: a near-copy must not pass by it
    for with_memo in (memo, None):
        obj = vector_tx()
        mutate(obj)
        with pytest.raises(Rejected) as info:
            decode_tx(obj, with_memo)
        assert info.value.code == code
        assert info.value.message


@pytest.mark.parametrize("obj", [None, [], "tx", 5, {"body": [], "signature": VECTOR_SIG}])
def test_non_objects_are_malformed(obj) -> None:
    with pytest.raises(Rejected) as info:
        decode_tx(obj)
    assert info.value.code == "malformed"


def test_largest_amount_is_accepted() -> None:
    obj = vector_tx()
    obj["body"]["payload"]["amount"] = 2**53 - 1
    assert decode_tx(obj).payload == Transfer(TO, "LDG", 2**53 - 1)


def _record(key: str, value: str) -> dict:
    tx = sign_tx(keys.PrivateKey.from_seed(SEED), "ledger-local", 0, Record("k", "v"))
    obj = tx.to_json()
    obj["body"]["payload"] = {"key": key, "value": value}
    return obj


def test_record_limits_count_utf8_bytes() -> None:
    assert decode_tx(_record("k" * 128, "v" * 4096)).payload == Record("k" * 128, "v" * 4096)
    for key, value in [("k" * 129, "v"), ("", "v"), ("k", "é" * 2049)]:
        with pytest.raises(Rejected) as info:
            decode_tx(_record(key, value))
        assert info.value.code == "record_too_large"


def test_lone_surrogate_is_malformed_not_a_crash() -> None:
    obj = json.loads('{"key": "k", "value": "\\ud800"}')
    with pytest.raises(Rejected) as info:
        decode_tx(_record(obj["key"], obj["value"]))
    assert info.value.code == "malformed"


def test_issue_payload_shape() -> None:
    tx = sign_tx(keys.PrivateKey.from_seed(SEED), "ledger-local", 0, Issue("GOLD", 1000))
    assert decode_tx(tx.to_json()).payload == Issue("GOLD", 1000)
    bad = tx.to_json()
    bad["body"]["payload"]["supply"] = 0
    with pytest.raises(Rejected):
        decode_tx(bad)


def test_canonical_json_refuses_floats() -> None:
    with pytest.raises(Rejected):
        canonical_json({"a": 1.5})
    assert canonical_json({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'.encode()


def test_decoded_signing_bytes_equal_the_generic_canonical_encoding() -> None:
    key = keys.PrivateKey.from_seed(SEED)
    texts = ["k", "quote\" back\\ slash", "tab\tnew\nline\u0001", "caf\u00e9 \u2603 \U0001f600", "</script>"]
    payloads = [Transfer(TO, "LDG", 1), Transfer(TO, "A1B2", 2**53 - 1), Issue("GOLD", 7)]
    payloads += [Record(k, v) for k in texts for v in texts + [""]]
    for nonce, payload in enumerate(payloads):
        signed = sign_tx(key, "chain.A-1_z", nonce, payload)
        decoded = decode_tx(json.loads(json.dumps(signed.to_json())))
        assert decoded.signing_bytes == b"ledgerd-tx-v1:" + canonical_json(signed.body())
        assert decoded.hash == signed.hash and decoded.signature_valid()
        assert decoded.encode() == signed.encode() == canonical_json(signed.to_json())


def test_decoding_the_same_json_again_answers_the_same_transaction() -> None:
    memo = DecodeMemo()
    first = decode_tx(vector_tx(), memo)
    assert decode_tx(vector_tx(), memo) is first
    assert decode_tx(json.loads(json.dumps(vector_tx())), memo) is first
    assert decode_tx(vector_tx()) is not first and decode_tx(vector_tx(), DecodeMemo()) is not first
    changed = vector_tx()
    changed["body"]["payload"]["amount"] = 11
    other = decode_tx(changed, memo)
    assert other is not first and other.payload.amount == 11 and other.signature == first.signature
