"""`ChainReads`: what the node answers from committed data (and the mempool) without queuing.

Reads run on the event loop thread, where every commit is applied atomically, so a read never sees
half a block. Each method reads the store as of the moment it is called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ledger import keys
from ledger.block import BlockHeader, decode_header
from ledger.errors import Rejected
from ledger.proof import ValidatorChange, header_bundle, transaction_bundle
from ledger.state import ParseMemo, account_key, decode_account, record_key
from node.core.mempool import Mempool
from node.governance import GovernanceReads
from node.service import TxStatus
from storage import StorageError, Store


def status_of(tx_hash: str, height: int, index: int, receipt: Mapping[str, Any]) -> TxStatus:
    status = "committed" if receipt.get("code") == "ok" else "failed"
    return TxStatus(tx_hash, status, height, index, dict(receipt))


class ValidatorHistory(Protocol):
    """The validator-set changes of the chain, for proofs: a verifier walks them from the genesis set."""

    def changes_through(self, height: int) -> list[ValidatorChange]:
        """Every change in force at or before `height`, oldest first, each with the header and
        certificate of the block that made it."""
        ...


class GenesisValidatorsOnly:
    """A chain whose validator set is the genesis set for ever: no change to list."""

    def changes_through(self, height: int) -> list[ValidatorChange]:
        return []


class ChainReads:
    def __init__(self, store: Store, mempool: Mempool, memo: ParseMemo,
                 validator_history: ValidatorHistory | None = None) -> None:
        self._store = store
        self._mempool = mempool
        self._memo = memo
        self._validator_history = validator_history or GenesisValidatorsOnly()
        self.governance = GovernanceReads(store)

    def tx_status(self, tx_hash: str) -> TxStatus | None:
        found = self._store.load_tx(tx_hash)
        if found is not None:
            return status_of(tx_hash, *found)
        if tx_hash in self._mempool:
            return TxStatus(tx_hash, "pending")
        dropped = self._mempool.dropped(tx_hash)
        if dropped is not None:
            return TxStatus(tx_hash, "failed", result={"code": dropped.code, "message": dropped.message})
        return None

    def block(self, height: int | None) -> dict[str, Any] | None:
        tip = self._store.tip.height
        if height is None:
            height = tip
        if not 1 <= height <= tip:
            return None
        block, hashes, receipts = self.load_stored(height)
        block_hash = hashes[0]
        header = block["header"]
        header["hash"] = block_hash
        return {
            "height": height,
            "hash": block_hash,
            "header": header,
            "txs": block["txs"],
            "receipts": [{"hash": h, **r} for h, r in zip(hashes[1:], receipts, strict=True)],
            "certificate": self._store.load_certificate(height),
        }

    def proof(self, tx_hash: str) -> dict[str, Any] | None:
        """The proof bundle of a committed transaction (`ledger.proof`); None when it is not committed.

        Rejected("proof_unavailable") when its block has a version-1 header (no receipts root)."""
        location = self._store.load_tx_location(tx_hash)
        if location is None:
            return None
        height, index = location
        block, hashes, receipts = self.load_stored(height)
        if hashes[index + 1] != tx_hash:
            raise StorageError(f"the tx index names position {index} of block {height} for {tx_hash}, "
                               "which holds another transaction")
        header, certificate = self._final_header(height, block)
        if header.version < 2:
            raise Rejected("proof_unavailable",
                           f"transaction {tx_hash} is in block {height}, whose version-{header.version} header "
                           "commits to no results; proofs exist for blocks with version-2 headers")
        return transaction_bundle(self._store.genesis_hash, header, certificate, block["txs"][index], index,
                                  hashes[1:], receipts, self._validator_history.changes_through(height))

    def header_proof(self, height: int) -> dict[str, Any] | None:
        """The proof bundle of the block header at `height` (its finality only); None above the head."""
        if not 1 <= height <= self._store.tip.height:
            return None
        block = self._store.load_block_json(height)
        if block is None:
            raise StorageError(f"block {height} is missing below the head {self._store.tip.height}")
        header, certificate = self._final_header(height, block)
        return header_bundle(self._store.genesis_hash, header, certificate,
                             self._validator_history.changes_through(height))

    def _final_header(self, height: int, block: Mapping[str, Any]) -> tuple[BlockHeader, dict[str, Any]]:
        certificate = self._store.load_certificate(height)
        if certificate is None:
            raise StorageError(f"the certificate of block {height} is missing below the head")
        try:
            return decode_header(block["header"]), certificate
        except Rejected as exc:
            raise StorageError(f"block {height} in the database has a bad header: {exc.message}") from None

    def load_stored(self, height: int) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
        """(block JSON, [block hash, tx hashes...], receipts) as stored; nothing is re-decoded."""
        block = self._store.load_block_json(height)
        tx_hashes = self._store.load_tx_hashes(height)
        receipts = self._store.load_receipts(height)
        if block is None or tx_hashes is None or receipts is None:
            raise StorageError(f"block {height} is missing below the head {self._store.tip.height}")
        block_hash = BlockHeader(**block["header"]).hash()
        return block, [block_hash, *tx_hashes], receipts

    def stored_event(self, height: int) -> dict[str, Any]:
        """The /v1/events message of a stored block."""
        block, hashes, receipts = self.load_stored(height)
        txs = [(h, tx["body"]) for h, tx in zip(hashes[1:], block["txs"], strict=True)]
        return block_event(hashes[0], block["header"], txs, receipts, self.governance.governance_events(height))

    def block_by_hash(self, block_hash: str) -> dict[str, Any] | None:
        height = self._store.height_of_block(block_hash)
        return None if height is None else self.block(height)

    def blocks(self, before: int | None, limit: int) -> dict[str, Any]:
        """Summaries of up to `limit` blocks below `before` (None: from the head), newest first, and
        the `before` of the next page (None at height 1)."""
        top = self._store.tip.height if before is None else min(before - 1, self._store.tip.height)
        heights = range(top, max(top - limit, 0), -1)
        summaries = [self._summary(height) for height in heights]
        last = heights[-1] if heights else 1
        return {"blocks": summaries, "next_before": last if last > 1 else None}

    def _summary(self, height: int) -> dict[str, Any]:
        block = self._store.load_block_json(height)
        if block is None:
            raise StorageError(f"block {height} is missing below the head {self._store.tip.height}")
        header = block["header"]
        return {"height": height, "hash": BlockHeader(**header).hash(), "timestamp": header["timestamp"],
                "proposer": header["proposer"], "tx_count": header["tx_count"],
                "signers": certificate_signers(self._store.load_certificate(height))}

    def account_transactions(self, address: str, after: tuple[int, int] | None, limit: int) -> dict[str, Any]:
        """The transactions involving `address`, newest first, from the account index; `next_after`
        is the (height, index) cursor of the next page, None after the last."""
        if not keys.is_address(address):
            raise Rejected("invalid_address", "an address is 64 lowercase hex characters")
        # One extra entry says whether another page exists without a second scan.
        found = self._store.account_txs(address, after, limit + 1)
        page = found[:limit]
        txs = []
        for height, index, tx_hash, sender, tx_type in page:
            stored = self._store.load_tx(tx_hash, height)
            receipt = stored[2] if stored is not None else {}
            txs.append({"hash": tx_hash, "height": height, "index": index, "sender": sender, "type": tx_type,
                        "status": "committed" if receipt.get("code") == "ok" else "failed",
                        "result": receipt})
        more = len(found) > limit
        return {"address": address, "transactions": txs,
                "next_after": f"{page[-1][0]}-{page[-1][1]}" if more else None}

    def account_records(self, owner: str, after: str | None, limit: int) -> dict[str, Any]:
        """`owner`'s records in key order; `next_after` is the last key when another page exists."""
        if not keys.is_address(owner):
            raise Rejected("invalid_address", "a record owner is 64 lowercase hex characters")
        found = self._store.owner_records(owner, after, limit + 1)
        records = []
        for key, raw in found[:limit]:
            stored = json.loads(raw)
            records.append({"owner": owner, "key": key, "value": stored["value"], "height": stored["height"],
                            "tx": stored["tx"]})
        more = len(found) > limit
        return {"owner": owner, "records": records, "next_after": records[-1]["key"] if more else None}

    def search(self, query: str) -> dict[str, Any]:
        """What a search box string names: a block height, a transaction (pending or committed), a
        block hash, a governance proposal or an account; {"kind": "none"} when it names nothing."""
        text = query.strip()
        if text.isdigit() and len(text) <= 19:
            height = int(text)
            if 1 <= height <= self._store.tip.height:
                return {"kind": "block", "height": height}
            return {"kind": "none", "message": f"no block at height {height} (the head is "
                                                f"{self._store.tip.height})"}
        if len(text) == 64 and keys.is_address(text.lower()):
            value = text.lower()
            if self.tx_status(value) is not None:
                return {"kind": "tx", "hash": value}
            found = self._store.height_of_block(value)
            if found is not None:
                return {"kind": "block", "height": found, "hash": value}
            # Any other 64 hex characters are a well-formed address; an unused one is simply empty.
            return {"kind": "account", "address": value}
        return {"kind": "none", "message": "search takes a block height, a transaction or block hash, or an "
                                           "account address (64 hex characters)"}

    def account(self, address: str) -> dict[str, Any]:
        if not keys.is_address(address):
            raise Rejected("invalid_address", "an address is 64 lowercase hex characters")
        account = decode_account(self._store.state.get(account_key(address)), self._memo)
        return {"address": address, "nonce": account.nonce, "balances": dict(account.balances),
                **self.governance.account_governance(address)}

    def record(self, owner: str, key: str) -> dict[str, Any] | None:
        if not keys.is_address(owner):
            raise Rejected("invalid_address", "a record owner is 64 lowercase hex characters")
        try:
            raw = self._store.state.get(record_key(owner, key))
        except UnicodeEncodeError:
            raise Rejected("invalid_record_key", "the record key is not valid Unicode") from None
        if raw is None:
            return None
        stored = json.loads(raw)
        return {"owner": owner, "key": key, "value": stored["value"], "height": stored["height"],
                "tx": stored["tx"]}


def certificate_signers(certificate: Mapping[str, Any] | None) -> list[str]:
    """Who signed a commit certificate: the validators of a PBFT certificate's seals, a Raft leader."""
    if not certificate:
        return []
    seals = certificate.get("seals")
    if isinstance(seals, list):
        return [str(seal.get("validator")) for seal in seals if isinstance(seal, Mapping)]
    leader = certificate.get("leader")
    return [str(leader)] if isinstance(leader, str) else []


def block_event(block_hash: str, header: Mapping[str, Any], txs: Sequence[tuple[str, Mapping[str, Any]]],
                receipts: Sequence[Mapping[str, Any]], governance: Sequence[Mapping[str, Any]] = ()
                ) -> dict[str, Any]:
    """One /v1/events message: the header, per transaction (hash, body) its result, and the
    governance proposals that closed in the block."""
    return {
        "type": "block",
        "height": header["height"],
        "hash": block_hash,
        "header": {**header, "hash": block_hash},
        "txs": [
            {"hash": tx_hash, "index": i, "sender": body["sender"], "nonce": body["nonce"],
             "type": body["type"], "status": "committed" if r.get("code") == "ok" else "failed",
             "result": dict(r)}
            for i, ((tx_hash, body), r) in enumerate(zip(txs, receipts, strict=True))
        ],
        "governance": [dict(g) for g in governance],
    }
