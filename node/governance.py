"""The node's read side of governance: committee, policy, proposals, an account's flags and a
block's governance events, read from committed state for the API (`NodeService`).

Owned by the node's `ChainReads`; it reads nothing but the store.
"""

from __future__ import annotations

from typing import Any

from ledger import governance, keys, valset
from ledger.errors import Rejected
from ledger.state import StateOverlay
from storage import Store

MAX_PROPOSALS_PER_PAGE = 100


class GovernanceReads:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _committed_governance(self) -> StateOverlay:
        # A fresh overlay per request: it caches what it read, and committed state moves on.
        return StateOverlay(self.store.state, self.store.chain_id)

    def committed_state(self) -> StateOverlay:
        """Committed state, read-only by convention (rules that check a proposal against it)."""
        return self._committed_governance()

    def pending_validator_change(self) -> dict[str, Any] | None:
        """The validator-set change waiting for its activation height, if any."""
        pending = valset.pending_change(self._committed_governance())
        if pending is None:
            return None
        return {"proposal": pending["proposal"], "action": pending["action"],
                "effective_height": pending["effective_height"],
                "validators": [v["node_id"] for v in pending["validators"]]}

    def _next_height(self) -> int:
        return self.store.tip.height + 1

    def overview(self) -> dict[str, Any]:
        return governance.overview(self._committed_governance(), self._next_height())

    def proposals(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        if status is not None and status not in governance.STATUSES:
            raise Rejected("invalid_query", f"status must be one of {', '.join(governance.STATUSES)}")
        limit = max(1, min(limit, MAX_PROPOSALS_PER_PAGE))
        return governance.list_proposals(self._committed_governance(), status, limit, self._next_height())

    def proposal(self, proposal_id: str) -> dict[str, Any] | None:
        if not keys.is_hex(proposal_id, 64):
            raise Rejected("invalid_hash", "a proposal id is 64 lowercase hex characters")
        return governance.proposal_view(self._committed_governance(), proposal_id, self._next_height())

    def account_governance(self, address: str) -> dict[str, Any]:
        """{roles, frozen, allowed} of an account, as `GET /v1/accounts/{address}` adds them."""
        flags = governance.account_flags(self._committed_governance(), address)
        return {"roles": flags["roles"], "frozen": flags["frozen"], "allowed": flags["allowed"]}

    def governance_events(self, height: int) -> list[dict[str, Any]]:
        """The proposals that closed in the committed block at `height` (executed, rejected, expired)."""
        return governance.events_at(self._committed_governance(), height)
