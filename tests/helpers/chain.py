"""Deterministic keys, genesis and blocks for storage, mempool and executor tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plyvel

from ledger import keys
from ledger.block import Block, make_block
from ledger.genesis import Genesis, Validator
from ledger.state import Execution, execute
from ledger.tx import Transaction, Transfer, build, sign_tx
from storage import Store
from storage.store import STATE

CHAIN = "ledger-test"


def key(i: int, tag: bytes = b"acct") -> keys.PrivateKey:
    return keys.PrivateKey.from_seed((tag + i.to_bytes(4, "big")).ljust(32, b"\x00"))


def make_genesis(
    validators: Sequence[keys.PrivateKey], accounts: Sequence[keys.PrivateKey], amount: int = 1_000_000,
    chain_id: str = CHAIN, consensus: str = "pbft",
) -> Genesis:
    return Genesis(
        chain_id, 1_700_000_000_000, consensus,
        tuple(Validator(v.address, f"node{i}") for i, v in enumerate(validators)),
        tuple((a.address, amount) for a in accounts),
    )


def next_block(store: Store, txs: Sequence[Transaction], proposer: str) -> tuple[Block, Execution]:
    """The block a proposer would build on the store's head, with its execution."""
    tip = store.tip
    execution = execute(store.state, store.chain_id, tip.height + 1, txs, tip.app_hash)
    block = make_block(store.chain_id, tip.height + 1, tip.block_hash, tip.timestamp + 1, proposer,
                       tuple(txs), execution.app_hash, execution.receipts)
    return block, execution


def transfer(sender: keys.PrivateKey, nonce: int, to: keys.PrivateKey, amount: int = 1,
             chain_id: str = CHAIN) -> Transaction:
    return sign_tx(sender, chain_id, nonce, Transfer(to.address, "LDG", amount))


def certificate_for(block: Block) -> dict[str, object]:
    """A stand-in certificate: storage treats certificates as opaque JSON."""
    return {"height": block.height, "block_hash": block.hash, "signatures": []}


def resigned(tx: Transaction, signer: keys.PrivateKey) -> Transaction:
    """The same body (so the same hash) carrying `signer`'s signature: invalid unless signer is the sender."""
    return build(tx.chain_id, tx.sender, tx.nonce, tx.type, tx.payload, signer.sign(tx.signing_bytes))


def replay_chain(store: Store, genesis: Genesis) -> tuple[dict[bytes, bytes], str]:
    """Re-execute every stored block from genesis, checking links, receipts and the tx index on the
    way; returns the state that results and its app hash."""
    state = dict(genesis.initial_writes())
    app_hash = genesis.initial_app_hash()
    prev_hash = genesis.hash()
    for height in range(1, store.tip.height + 1):
        block = store.load_block(height)
        assert block is not None, f"block {height} missing below the head"
        assert block.header.prev_hash == prev_hash, f"block {height} does not link to its parent"
        execution = execute(state, store.chain_id, height, block.txs, app_hash)
        assert execution.app_hash == block.header.app_hash, f"block {height} app_hash does not replay"
        assert store.load_receipts(height) == [r.to_json() for r in execution.receipts]
        assert store.load_certificate(height) is not None
        assert store.load_tx_hashes(height) == [tx.hash for tx in block.txs]
        for index, tx in enumerate(block.txs):
            assert store.load_tx_location(tx.hash) == (height, index)
        state.update(execution.writes)
        app_hash, prev_hash = execution.app_hash, block.hash
    assert prev_hash == store.tip.block_hash and app_hash == store.tip.app_hash
    return state, app_hash


def stored_state(path: Path) -> dict[bytes, bytes]:
    """Every state key/value in a closed database, read directly."""
    db = plyvel.DB(str(path))
    try:
        return {k[len(STATE):]: v for k, v in db.iterator(prefix=STATE)}
    finally:
        db.close()
