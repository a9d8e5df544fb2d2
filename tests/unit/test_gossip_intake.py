"""Reading a peer's transaction batch (`node.net.gossip.read_tx_batch`): a peer is outside input, so
every refusal is a counted drop reason and never an exception; the size is refused before any
parsing; nesting, non-arrays and too many items are refused; the slow path pauses so the event
loop can run; and what `TxBatcher` sends within the same limits is always read back whole."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import pytest

from ledger import keys
from ledger.tx import Payload, Record, Transaction, Transfer, decode_canonical_array, sign_tx
from node.net import gossip
from node.net.gossip import (
    MALFORMED,
    MAX_TX_JSON_CHARS,
    PAUSE_EVERY_CHARS,
    PAUSE_EVERY_TXS,
    TOO_DEEP,
    TOO_LARGE,
    TOO_MANY,
    TxBatcher,
    TxBatchLimits,
    decode_tx_batch,
    read_tx_batch,
)

KEY = keys.PrivateKey.from_seed(bytes(range(32)))
TO = keys.PrivateKey.from_seed(bytes(range(1, 33))).address
CHAIN = "ledger-local"
LIMITS = TxBatchLimits(max_txs=1000, max_bytes=1 << 20)


def tx(nonce: int, payload: Payload | None = None) -> Transaction:
    return sign_tx(KEY, CHAIN, nonce, payload or Transfer(TO, "LDG", 1))


def canonical(*txs: Transaction) -> bytes:
    return b"[" + b",".join(t.encode() for t in txs) + b"]"


def spaced(*txs: Transaction) -> bytes:
    """The same transactions as JSON with spaces: not canonical, so read by the slow path."""
    return json.dumps([t.to_json() for t in txs]).encode()


def never(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("parsed a batch that should have been refused unread")


def test_an_oversize_batch_is_refused_before_anything_parses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 16 MB arrays that stalled the event loop: refused by their length alone."""
    monkeypatch.setattr(gossip, "decode_canonical_array", never)
    monkeypatch.setattr(gossip, "_json_item", never)
    monkeypatch.setattr(gossip, "decode_tx", never)
    huge = b"[" + b"[]," * (16 * 1024 * 1024 // 3) + b"[]]"
    batch = decode_tx_batch(huge, LIMITS)
    assert (batch.txs, batch.dropped) == ([], [TOO_LARGE])
    just_over = b"[" + b" " * (LIMITS.max_bytes - 1) + b"]"
    assert decode_tx_batch(just_over, LIMITS).dropped == [TOO_LARGE]


def test_deep_nesting_is_refused_not_raised() -> None:
    """A deeply nested array made the JSON parser raise RecursionError, which killed the intake."""
    for data in (b"[" * 100_000 + b"]" * 100_000, b"[" + b"[" * 5000 + b"]" * 5000 + b"]",
                 b'[{"body":' + b"[" * 50_000):
        batch = decode_tx_batch(data, LIMITS)
        assert (batch.txs, batch.dropped) == ([], [TOO_DEEP]), data[:20]


@pytest.mark.parametrize("data", [
    b"", b"not json", b'{"body": 1}', b"42", b'"[]"', b"\xff\xfe[]", b"[", b"[1,", b"[1,]", b"[] []",
    b"[]x", b'["' + b"a" * (MAX_TX_JSON_CHARS + 10) + b'"]', b"[" + b"9" * 5000 + b"]",
])
def test_what_is_not_a_json_array_of_items_is_refused_as_malformed(data: bytes) -> None:
    batch = decode_tx_batch(data, LIMITS)
    assert (batch.txs, batch.dropped) == ([], [MALFORMED])


def test_too_many_items_refuse_the_whole_batch_on_either_path() -> None:
    limits = TxBatchLimits(max_txs=3, max_bytes=1 << 20)
    txs = [tx(n) for n in range(4)]
    for encode in (canonical, spaced):
        assert decode_tx_batch(encode(*txs[:3]), limits).txs == txs[:3]
        batch = decode_tx_batch(encode(*txs), limits)
        assert (batch.txs, batch.dropped) == ([], [TOO_MANY])
    assert decode_tx_batch(b"[" + b",".join([b"0"] * 4) + b"]", limits).dropped == [TOO_MANY]


def test_bad_items_are_dropped_one_by_one_and_the_good_ones_kept() -> None:
    good = [tx(0), tx(1, Record("caf\u00e9", "\u2603 not plain ASCII"))]
    data = b"[" + good[0].encode() + b', {"nope": true}, 7, ' + good[1].encode() + b"]"
    batch = decode_tx_batch(data, LIMITS)
    assert [t.hash for t in batch.txs] == [t.hash for t in good]
    assert batch.dropped == [MALFORMED, MALFORMED]
    assert decode_tx_batch(b" [ ] ", LIMITS).txs == []


def test_the_largest_transaction_fits_the_item_window_in_any_spelling() -> None:
    """Every byte of a record's key and value escaped (\\u0001): the longest JSON a valid transaction
    takes, canonical or as `json.dumps` spells it; both are read back."""
    largest = tx(0, Record("\u0001" * 128, "\u0001" * 4096))
    for data in (canonical(largest), spaced(largest)):
        assert len(data) - 2 <= MAX_TX_JSON_CHARS
        assert [t.hash for t in decode_tx_batch(data, LIMITS).txs] == [largest.hash]


def test_the_slow_path_pauses_while_it_reads() -> None:
    """No single step reads much: a non-canonical batch is read item by item, with a pause at
    least every PAUSE_EVERY_CHARS characters (where the node's intake lets its event loop run)."""
    txs = [tx(n, Record(f"k{n}", "v" * 4000)) for n in range(100)]
    data = spaced(*txs)
    reader = read_tx_batch(data, LIMITS)
    pauses = 0
    while True:
        try:
            next(reader)
        except StopIteration as done:
            assert [t.hash for t in done.value.txs] == [t.hash for t in txs]
            break
        pauses += 1
    assert pauses >= len(data) // PAUSE_EVERY_CHARS


def read_counting_pauses(data: bytes) -> tuple[list[str], list[str], int]:
    reader = read_tx_batch(data, LIMITS)
    pauses = 0
    while True:
        try:
            next(reader)
        except StopIteration as done:
            return [t.hash for t in done.value.txs], done.value.dropped, pauses
        pauses += 1


def test_the_fast_path_reads_a_long_canonical_array_in_runs_with_pauses() -> None:
    """Cut at `,{"body":` into runs of PAUSE_EVERY_TXS: the same transactions as reading it whole."""
    txs = [tx(n, Record(f"k{n}", ",{body}:," if n % 7 == 0 else "v")) for n in range(3 * PAUSE_EVERY_TXS + 5)]
    data = canonical(*txs)
    whole = decode_canonical_array(data)
    assert whole is not None
    hashes, dropped, pauses = read_counting_pauses(data)
    assert (hashes, dropped) == ([t.hash for t in whole], [])
    assert pauses >= 3


def test_a_bad_item_late_in_a_canonical_looking_array_falls_back_to_the_item_reader() -> None:
    txs = [tx(n) for n in range(2 * PAUSE_EVERY_TXS + 3)]
    data = canonical(*txs)[:-1] + b',{"body": "not canonical"}]'
    hashes, dropped, _ = read_counting_pauses(data)
    assert (hashes, dropped) == ([t.hash for t in txs], [MALFORMED])
    truncated = b"[" + canonical(*txs)[1:-1] + b',{"body":]'
    assert read_counting_pauses(truncated)[:2] == ([], [MALFORMED])


def test_what_the_batcher_sends_within_the_limits_is_read_back_whole() -> None:
    """The sender splits by the same byte limit the receiver enforces, so honest gossip is never
    refused as too large."""
    limits = TxBatchLimits(max_txs=1000, max_bytes=64 * 1024)
    sent: list[bytes] = []
    batcher = TxBatcher(sent.append, max_batch_txs=limits.max_txs, max_batch_bytes=limits.max_bytes,
                        max_pending_txs=10_000, flush_s=0, on_overflow=lambda n: None)
    txs = [tx(n, Record(f"k{n}", "w" * 3000)) for n in range(60)]
    batcher.add(txs)
    assert len(sent) > 1
    read = [decode_tx_batch(data, limits) for data in sent]
    assert all(b.dropped == [] for b in read)
    assert [t.hash for b in read for t in b.txs] == [t.hash for t in txs]
