"""The seam between the HTTP layer and the node: what the API may ask of a node.

HTTP handlers talk only to a `NodeService`. They never touch the engine or the database; the
service enqueues work for the runtime and awaits its answer, or reads committed data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """Per-transaction answer to a submission: accepted (pending) or refused with a stable code."""

    hash: str | None  # None when the input could not even be decoded into a transaction
    code: str = "accepted"  # "accepted" or a refusal code such as "invalid_signature", "mempool_full"
    message: str = ""
    retry_after_s: int | None = None  # set for mempool_full

    @property
    def accepted(self) -> bool:
        return self.code == "accepted"


@dataclass(frozen=True, slots=True)
class TxStatus:
    hash: str
    status: str  # "pending" | "committed" | "failed"
    height: int | None = None
    index: int | None = None
    result: dict[str, Any] | None = None  # the receipt: {"code": "ok"} or {"code": ..., "message": ...}

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "status": self.status, "height": self.height, "index": self.index,
                "result": self.result}


class NodeService(Protocol):
    chain_id: str
    node_id: str

    async def submit(self, txs: list[Any]) -> list[SubmitOutcome]:
        """Decode, check and admit transactions (parsed JSON, or `Transaction`s the caller already
        decoded) to the mempool, and gossip them."""
        ...

    async def wait_committed(self, tx_hash: str, timeout_s: float) -> TxStatus | None:
        """The tx's final status once committed or failed; None on timeout."""
        ...

    def tx_status(self, tx_hash: str) -> TxStatus | None: ...

    def block(self, height: int | None) -> dict[str, Any] | None:
        """{"header", "hash", "txs", "receipts", "certificate"} at `height` (None: latest)."""
        ...

    def proof(self, tx_hash: str) -> dict[str, Any] | None:
        """The proof bundle of a committed transaction (format: docs/proofs.md); None when it is not
        committed; Rejected("proof_unavailable") when its block predates receipt commitments."""
        ...

    def header_proof(self, height: int) -> dict[str, Any] | None:
        """The proof bundle of the block header at `height` (finality only); None above the head."""
        ...

    def block_by_hash(self, block_hash: str) -> dict[str, Any] | None:
        """The committed block with this hash, shaped as `block`; None if unknown."""
        ...

    def blocks(self, before: int | None, limit: int) -> dict[str, Any]:
        """{"blocks": summaries newest first below `before` (None: from the head), "next_before"}."""
        ...

    def account_transactions(self, address: str, after: tuple[int, int] | None, limit: int) -> dict[str, Any]:
        """{"address", "transactions": newest first, after the (height, index) cursor, "next_after"}."""
        ...

    def account_records(self, owner: str, after: str | None, limit: int) -> dict[str, Any]:
        """{"owner", "records": in key order after the key `after`, "next_after"}."""
        ...

    def search(self, query: str) -> dict[str, Any]:
        """{"kind": "block"|"tx"|"account"|"none", ...}: what a search string names."""
        ...

    def account(self, address: str) -> dict[str, Any]:
        """{address, nonce, balances, roles, frozen, allowed}."""
        ...

    def record(self, owner: str, key: str) -> dict[str, Any] | None: ...

    def status(self) -> dict[str, Any]: ...

    def governance(self) -> dict[str, Any]:
        """The committee, the policy, the role holders and the open proposals' ids."""
        ...

    def proposals(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Proposals newest first, optionally only those with `status`; Rejected for a bad status."""
        ...

    def proposal(self, proposal_id: str) -> dict[str, Any] | None:
        """One proposal with its votes, tally and status; None if unknown."""
        ...

    def events(self, from_height: int | None) -> AsyncIterator[dict[str, Any]]:
        """Committed blocks with their tx results, in height order, from `from_height` (or the
        next block) onwards, without gaps; ends when the node shuts down."""
        ...
