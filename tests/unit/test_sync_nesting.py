"""Blocks and sync answers are a peer's bytes: deep nesting in a block is a `malformed_block`
refusal (`decode_block`, used by block sync and both engines), and in a sync answer's block or
certificate a bad batch (the peer is penalized). Never a RecursionError: block sync's task and the
consensus runtime are watched by the node, and a failing one halts it, so an uncaught parse error
would let one peer halt a validator."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.block import decode_block
from ledger.errors import Rejected
from node.net.sync import MAGIC, BadBatch, decode_batch
from storage import Store
from tests.helpers.chain import CHAIN, certificate_for, key, make_genesis, next_block, transfer

VALIDATOR = key(0, b"node")
ACCOUNTS = [key(i) for i in range(2)]
NESTED = b"[" * 100_000 + b"]" * 100_000


def answer(*pairs: tuple[bytes, bytes]) -> bytes:
    out = bytearray(MAGIC + (len(pairs)).to_bytes(8, "big") + len(pairs).to_bytes(4, "big"))
    for raw_block, raw_cert in pairs:
        out += len(raw_block).to_bytes(4, "big") + raw_block + len(raw_cert).to_bytes(4, "big") + raw_cert
    return bytes(out)


def test_deeply_nested_blocks_and_certificates_are_bad_batches(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db", make_genesis([VALIDATOR], ACCOUNTS))
    try:
        block, execution = next_block(store, [transfer(ACCOUNTS[0], 0, ACCOUNTS[1])], VALIDATOR.address)
        store.save_block(block, certificate_for(block), execution)
        raw = store.load_block_bytes(1)
        assert raw is not None
    finally:
        store.close()
    for bad_block in (NESTED, b'{"header":' + NESTED, b'{"header":{"a":' + NESTED + b'},"txs":[]}'):
        with pytest.raises(Rejected) as refused:
            decode_block(bad_block)
        assert refused.value.code == "malformed_block"
        with pytest.raises(BadBatch):
            decode_batch(answer((bad_block, b"{}")), 1, CHAIN, 64)
    with pytest.raises(BadBatch, match="certificate of block 1 is not JSON"):
        decode_batch(answer((raw, NESTED)), 1, CHAIN, 64)
