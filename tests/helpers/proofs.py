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
from ledger.block import Block, BlockHeader, make_block
from ledger.genesis import Genesis
from ledger.governance import GenesisGovernance
from ledger.state import ParseMemo
from ledger.tx import Transaction
from node.core.mempool import Mempool, MempoolLimits
from node.core.validators import ValidatorSets
from node.reads import ChainReads
from storage import MemoryBackend, MemoryDisk, Store
from tests.helpers.chain import CHAIN, key, make_genesis, next_block


def pbft_header_certificate(header: BlockHeader, validators: Sequence[keys.PrivateKey], signers: Sequence[int],
                            round: int = 0) -> dict[str, Any]:
    """The certificate the PBFT engine stores: COMMIT seals of `signers` (indexes into `validators`)."""
    block_hash = header.hash()
    message = signing_bytes(header.chain_id, Kind.COMMIT, header.height, round, block_hash)
    return {"height": header.height, "round": round, "block_hash": block_hash,
            "seals": [{"validator": validators[i].address, "signature": validators[i].sign(message).hex()}
                      for i in sorted(signers)]}


def pbft_certificate(block: Block, validators: Sequence[keys.PrivateKey], signers: Sequence[int],
                     round: int = 0) -> dict[str, Any]:
    return pbft_header_certificate(block.header, validators, signers, round)


def raft_certificate(block: Block, leader: keys.PrivateKey, term: int = 1) -> dict[str, Any]:
    signature = sign_commit(Ed25519Signer(leader), block.header.chain_id, block.height, block.hash, term)
    return make_certificate(term, leader.address, signature)


class ProofChain:
    """A store over an in-memory disk, blocks appended with `commit`, read back through `ChainReads`.

    With `committee` members (keys `self.members`; any two pass a proposal), the genesis has
    governance, so the validator set can change: each block is then signed by the set in force at
    its height, whose keys must be in `self.keyring` (`add_validator_key`)."""

    def __init__(self, consensus: str = "pbft", validators: int = 4, accounts: int = 3,
                 chain_id: str = CHAIN, committee: int = 0) -> None:
        self.validators = [key(i, b"node") for i in range(validators)]
        self.accounts = [key(i) for i in range(accounts)]
        self.members = [key(i, b"member") for i in range(committee)]
        genesis = make_genesis(self.validators, self.accounts, chain_id=chain_id, consensus=consensus)
        if committee:
            genesis = Genesis(genesis.chain_id, genesis.genesis_time, genesis.consensus, genesis.validators,
                              genesis.allocations,
                              GenesisGovernance(tuple((m.address, 1) for m in self.members), 2, 3, 10))
        self.genesis: Genesis = genesis
        self.keyring = {v.address: v for v in self.validators}
        self.store = Store(MemoryBackend(MemoryDisk("proofs")), self.genesis)
        self.valsets = ValidatorSets(self.store, self.genesis)
        memo = ParseMemo()
        self.reads = ChainReads(self.store, Mempool(self.store, chain_id, MempoolLimits(), lambda: 0.0), memo,
                                validator_history=self.valsets)

    def add_validator_key(self, validator: keys.PrivateKey) -> None:
        self.keyring[validator.address] = validator

    def signing_set(self, height: int) -> list[keys.PrivateKey]:
        """The keys of the validators in force at `height`, in proposer order."""
        return [self.keyring[node_id] for node_id in self.valsets.at(height)]

    def commit(self, txs: Sequence[Transaction], signers: Sequence[int] | None = None,
               proposer: int = 0, version: int = 2, term: int = 1) -> Block:
        """Append a block of `txs` built by `proposer`, certified by `signers` (both indexes into the
        set in force at its height; signers default to the first quorum of it). Under Raft the
        proposer is the leader, and certifies the block as leader of `term`, as the engine does."""
        in_force = self.signing_set(self.store.tip.height + 1)
        block, execution = next_block(self.store, txs, in_force[proposer].address)
        if version == 1:  # a block as built before header version 2 (no receipts_root)
            h = block.header
            block = make_block(h.chain_id, h.height, h.prev_hash, h.timestamp, h.proposer, block.txs, h.app_hash)
            assert block.header.version == 1
        if self.genesis.consensus == "raft":
            certificate = raft_certificate(block, in_force[proposer], term)
        else:
            quorum = quorum_size(len(in_force))
            certificate = pbft_certificate(block, in_force, signers or range(quorum))
        self.store.save_block(block, certificate, execution)
        return block
