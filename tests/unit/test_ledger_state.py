"""The state machine: transfer, issue and record rules, receipts, nonces and the app hash chain."""

from __future__ import annotations

import pytest

from ledger import keys
from ledger.block import decode_block, make_block
from ledger.encoding import canonical_json
from ledger.errors import Rejected
from ledger.genesis import Genesis, Validator
from ledger.state import (
    OK,
    Account,
    ParseMemo,
    Receipt,
    StateOverlay,
    account_key,
    decode_account,
    encode_account,
    execute,
)
from ledger.tx import Issue, Record, Transfer, sign_tx

CHAIN = "ledger-test"
ALICE = keys.PrivateKey.from_seed(b"a" * 32)
BOB = keys.PrivateKey.from_seed(b"b" * 32)


def genesis() -> Genesis:
    return Genesis(CHAIN, 0, "pbft", (Validator(ALICE.address, "v0"),), ((ALICE.address, 1000),))


class Store(dict):
    """A dict that applies write sets, standing in for the database's state namespace."""

    def apply(self, writes: dict[bytes, bytes]) -> None:
        self.update(writes)


def fresh() -> tuple[Store, str]:
    g = genesis()
    store = Store(g.initial_writes())
    return store, g.initial_app_hash()


def balances(store: Store, who: keys.PrivateKey) -> dict[str, int]:
    return decode_account(store.get(account_key(who.address))).balances


def test_transfer_moves_funds_and_consumes_the_nonce() -> None:
    store, app = fresh()
    result = execute(store, CHAIN, 1, [sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 10))], app)
    assert [r.code for r in result.receipts] == ["ok"]
    store.apply(result.writes)
    assert balances(store, ALICE) == {"LDG": 990}
    assert balances(store, BOB) == {"LDG": 10}
    assert decode_account(store[account_key(ALICE.address)]).nonce == 1


def test_failures_consume_the_nonce_and_change_nothing_else() -> None:
    store, app = fresh()
    txs = [
        sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 5000)),  # insufficient_funds
        sign_tx(ALICE, CHAIN, 1, Transfer(BOB.address, "XYZ", 1)),  # unknown_asset
        sign_tx(ALICE, CHAIN, 2, Issue("LDG", 5)),  # asset_exists
    ]
    result = execute(store, CHAIN, 1, txs, app)
    assert [r.code for r in result.receipts] == ["insufficient_funds", "unknown_asset", "asset_exists"]
    store.apply(result.writes)
    assert balances(store, ALICE) == {"LDG": 1000}
    assert account_key(BOB.address) not in store
    assert decode_account(store[account_key(ALICE.address)]).nonce == 3


def test_issue_then_transfer_the_new_asset_in_one_block() -> None:
    store, app = fresh()
    txs = [sign_tx(BOB, CHAIN, 0, Issue("GOLD", 500)), sign_tx(BOB, CHAIN, 1, Transfer(ALICE.address, "GOLD", 200))]
    result = execute(store, CHAIN, 3, txs, app)
    assert all(r.ok for r in result.receipts)
    store.apply(result.writes)
    assert balances(store, BOB) == {"GOLD": 300}
    assert balances(store, ALICE) == {"LDG": 1000, "GOLD": 200}


def test_record_is_stored_under_owner_and_key() -> None:
    store, app = fresh()
    tx = sign_tx(BOB, CHAIN, 0, Record("doc/1", "sha256:abc"))
    result = execute(store, CHAIN, 4, [tx], app)
    overlay = StateOverlay(Store({**store, **result.writes}), CHAIN)
    assert overlay.account(BOB.address).nonce == 1
    assert any(k.startswith(b"r" + bytes.fromhex(BOB.address)) for k in result.writes)


@pytest.mark.parametrize("nonce", [1, 5])
def test_a_nonce_gap_makes_the_block_invalid(nonce: int) -> None:
    store, app = fresh()
    with pytest.raises(Rejected) as info:
        execute(store, CHAIN, 1, [sign_tx(ALICE, CHAIN, nonce, Transfer(BOB.address, "LDG", 1))], app)
    assert info.value.code == "invalid_block"


def test_replayed_and_foreign_chain_txs_make_the_block_invalid() -> None:
    store, app = fresh()
    tx = sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 1))
    with pytest.raises(Rejected):
        execute(store, CHAIN, 1, [tx, tx], app)
    with pytest.raises(Rejected):
        execute(store, CHAIN, 1, [sign_tx(ALICE, "other", 0, Transfer(BOB.address, "LDG", 1))], app)


def test_app_hash_is_deterministic_and_chains() -> None:
    store, app = fresh()
    txs = [sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 1))]
    first = execute(store, CHAIN, 1, txs, app)
    again = execute(Store(store), CHAIN, 1, txs, app)
    assert first.app_hash == again.app_hash
    assert execute(store, CHAIN, 1, txs, "11" * 32).app_hash != first.app_hash
    other = execute(store, CHAIN, 1, [sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 2))], app)
    assert other.app_hash != first.app_hash


def test_genesis_hash_binds_chain_and_validators() -> None:
    g = genesis()
    assert Genesis.from_json(g.to_json()) == g
    other = Genesis(CHAIN, 0, "raft", g.validators, g.allocations)
    assert other.hash() != g.hash()
    with pytest.raises(Rejected):
        Genesis.from_json({**g.to_json(), "allocations": [{"address": ALICE.address, "balances": {"LDG": 2**53}}]})


def test_block_round_trips_and_detects_tampering() -> None:
    store, app = fresh()
    txs = (sign_tx(ALICE, CHAIN, 0, Transfer(BOB.address, "LDG", 1)),)
    app_hash = execute(store, CHAIN, 1, txs, app).app_hash
    block = make_block(CHAIN, 1, genesis().hash(), 1000, ALICE.address, txs, app_hash)
    again = decode_block(block.encode())
    assert again.hash == block.hash and again.txs == block.txs
    tampered = block.encode().replace(b'"amount":1', b'"amount":2')
    with pytest.raises(Rejected) as info:
        decode_block(tampered)
    assert info.value.code == "malformed_block"
    with pytest.raises(Rejected):
        decode_block(b"\xff not json")


@pytest.mark.parametrize("account", [Account(0, {}), Account(7, {"LDG": 1}),
                                     Account(2**53 - 1, {"ZZ9": 3, "AB": 2**53 - 1, "LDG": 5})])
def test_account_bytes_are_the_canonical_encoding_and_parse_back_to_a_copy(account: Account) -> None:
    raw = encode_account(account)
    assert raw == canonical_json(account.to_json())
    memo = ParseMemo(max_entries=2)
    first, second = decode_account(raw, memo), decode_account(raw, memo)
    assert first == account == second == decode_account(raw)
    first.balances["LDG"] = 0  # callers mutate what they get; the remembered parse must not change
    assert decode_account(raw, memo) == account


def test_receipt_bytes_are_the_canonical_json_of_the_receipt() -> None:
    """What the store writes for receipts (the shared "ok" bytes included) reads back as to_json()."""
    for receipt in (OK, Receipt("ok"), Receipt("insufficient_funds", 'balance of "LDG" is 5\\n, caf\u00e9')):
        assert receipt.encode() == canonical_json(receipt.to_json())
