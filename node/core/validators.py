"""`ValidatorSets`: the validator set in force at a height, read from committed state.

The set of height h is fixed by the state committed at h - ACTIVATION_DELAY or later
(`ledger.valset`), so the node's committed state answers for every height up to
tip + ACTIVATION_DELAY; older heights come from the recorded history of changes. A chain without
a committee has no record: its genesis set is in force at every height.

Deterministic and synchronous; reads nothing but the store.
"""

from __future__ import annotations

from typing import Any

from ledger import valset
from ledger.block import decode_header, receipt_leaf
from ledger.encoding import canonical_json
from ledger.genesis import Genesis
from ledger.merkle import inclusion_proof
from ledger.proof import ValidatorChange, change_receipt
from ledger.state import StateOverlay
from storage import StorageError, Store


class ValidatorSets:
    def __init__(self, store: Store, genesis: Genesis) -> None:
        self._store = store
        self._genesis = genesis

    def _committed(self) -> StateOverlay:
        return StateOverlay(self._store.state, self._store.chain_id)

    def known_through(self) -> int:
        """The highest height whose set committed state fixes."""
        return self._store.tip.height + valset.ACTIVATION_DELAY

    def at(self, height: int) -> tuple[str, ...]:
        """The node ids in force at `height` (at most `known_through()`), in proposer order."""
        if height > self.known_through():
            raise ValueError(f"the validator set of height {height} is not known at tip {self._store.tip.height}")
        state = self._committed()
        if valset.record(state) is None:
            return self._genesis.validator_ids
        current = self._genesis.validator_ids
        for change in valset.history(state):
            if change["effective_height"] <= height:
                current = tuple(change["validators"])
        return current

    def entries_at(self, height: int) -> list[dict[str, Any]]:
        """`at(height)` with names and p2p URLs (genesis validators have no URL in state)."""
        record = valset.record(self._committed())
        if record is not None and height >= self._store.tip.height:
            entries = valset.entries_at(record, height)
            assert entries is not None
            return entries
        names = {v.node_id: v.name for v in self._genesis.validators}
        return [{"node_id": i, "name": names.get(i, ""), "p2p_url": ""} for i in self.at(height)]

    def changes_through(self, height: int) -> list[ValidatorChange]:
        """Every change in force at or before `height`, oldest first, with the header and certificate
        of the block that decided it (`node.reads.ValidatorHistory`, for proof bundles)."""
        out = []
        for change in valset.history(self._committed()):
            if change["effective_height"] > height:
                break
            decided = change["executed_height"]
            block = self._store.load_block_json(decided)
            certificate = self._store.load_certificate(decided)
            hashes = self._store.load_tx_hashes(decided)
            receipts = self._store.load_receipts(decided)
            if block is None or certificate is None or hashes is None or receipts is None:
                raise StorageError(f"block {decided}, which decided a validator-set change, is missing")
            tx_hashes = hashes
            bare = ValidatorChange(change["effective_height"], tuple(change["validators"]),
                                   decode_header(block["header"]), certificate)
            wanted = change_receipt(bare)
            index = next((i for i, r in enumerate(receipts) if r == wanted), None)
            if index is None:
                raise StorageError(f"block {decided} holds no receipt of the validator-set change it decided")
            leaves = [receipt_leaf(h, canonical_json(r)) for h, r in zip(tx_hashes, receipts, strict=True)]
            path = tuple(node.hex() for node in inclusion_proof(leaves, index))
            out.append(ValidatorChange(bare.activation_height, bare.validators, bare.header, certificate,
                                       tx_hashes[index], index, path))
        return out

    def ever(self) -> frozenset[str]:
        """Every node id that was or will be a validator (genesis, history, pending)."""
        ids = set(self._genesis.validator_ids)
        state = self._committed()
        for change in valset.history(state):
            ids.update(change["validators"])
        return frozenset(ids)
