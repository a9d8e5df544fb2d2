"""A small chain with real commit certificates (PBFT seals or a Raft leader signature), built in
memory, for proof tests and the docs/proofs test vectors. Everything is deterministic: seeded keys,
fixed timestamps, Ed25519 (deterministic signatures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consensus.api import Ed25519Signer
from consensus.bft.messages import Kind, signing_bytes
from consensus.bft.rounds import quorum_size
from consensus.raft.certificate import make_certificate, sign_commit
from ledger import keys
from ledger.block import Block, make_block
from ledger.genesis import Genesis
from ledger.state import ParseMemo
from ledger.tx import Transaction
from node.core.mempool import Mempool, MempoolLimits
from node.reads import ChainReads
from storage import MemoryBackend, MemoryDisk, Store
from tests.helpers.chain import CHAIN, key, make_genesis, next_block


def pbft_certificate(block: Block, validators: Sequence[keys.PrivateKey], signers: Sequence[int],
                     round: int = 0) -> dict[str, Any]:
    """The certificate the PBFT engine stores: COMMIT seals of `signers` (indexes into `validators`)."""
    message = signing_bytes(block.header.chain_id, Kind.COMMIT, block.height, round, block.hash)
    return {"height": block.height, "round": round, "block_hash": block.hash,
            "seals": [{"validator": validators[i].address, "signature": validators[i].sign(message).hex()}
                      for i in sorted(signers)]}


def raft_certificate(block: Block, leader: keys.PrivateKey, term: int = 1) -> dict[str, Any]:
    signature = sign_commit(Ed25519Signer(leader), block.header.chain_id, block.height, block.hash, term)
    return make_certificate(term, leader.address, signature)


class ProofChain:
    """A store over an in-memory disk, blocks appended with `commit`, read back through `ChainReads`."""

    def __init__(self, consensus: str = "pbft", validators: int = 4, accounts: int = 3,
                 chain_id: str = CHAIN) -> None:
        self.validators = [key(i, b"node") for i in range(validators)]
        self.accounts = [key(i) for i in range(accounts)]
        self.genesis: Genesis = make_genesis(self.validators, self.accounts, chain_id=chain_id,
                                             consensus=consensus)
        self.store = Store(MemoryBackend(MemoryDisk("proofs")), self.genesis)
        memo = ParseMemo()
        self.reads = ChainReads(self.store, Mempool(self.store, chain_id, MempoolLimits(), lambda: 0.0), memo)

    def commit(self, txs: Sequence[Transaction], signers: Sequence[int] | None = None,
               proposer: int = 0, version: int = 2) -> Block:
        block, execution = next_block(self.store, txs, self.validators[proposer].address)
        if version == 1:  # a block as built before header version 2 (no receipts_root)
            h = block.header
            block = make_block(h.chain_id, h.height, h.prev_hash, h.timestamp, h.proposer, block.txs, h.app_hash)
            assert block.header.version == 1
        if self.genesis.consensus == "raft":
            certificate = raft_certificate(block, self.validators[proposer])
        else:
            quorum = quorum_size(len(self.validators))
            certificate = pbft_certificate(block, self.validators, signers or range(quorum))
        self.store.save_block(block, certificate, execution)
        return block
