"""REST routes of governance: the committee and policy, proposals by status, one proposal.

    GET /v1/governance                          committee, policy, role holders, open proposal ids
    GET /v1/governance/proposals[?status=S&limit=N]   newest first (S: open|executed|rejected|expired)
    GET /v1/governance/proposals/{id}           one proposal: action, votes, tally, status, heights

Proposals and votes themselves are transactions (`propose`, `vote`) submitted to POST
/v1/transactions like any other. `openapi_paths` and `openapi_schemas` describe these routes for
the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from aiohttp import web

from ledger import governance
from node.api.errors import ApiError, dumps
from node.api.query import checked_query
from node.service import NodeService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
DEFAULT_PAGE = 50
MAX_PAGE = 100


class _GovernanceHandlers:
    def __init__(self, service: NodeService) -> None:
        self.service = service

    async def overview(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        return web.json_response(self.service.governance(), dumps=dumps)

    async def proposals(self, request: web.Request) -> web.StreamResponse:
        query = checked_query(request, ("status", "limit"))
        status = query.get("status")
        if status is not None and status not in governance.STATUSES:
            raise ApiError("invalid_query", f"status must be one of {', '.join(governance.STATUSES)}")
        limit = DEFAULT_PAGE
        if "limit" in query:
            text = query["limit"]
            if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
                raise ApiError("invalid_query", f"limit must be an integer from 1 to {MAX_PAGE}")
            limit = int(text)
        return web.json_response({"proposals": self.service.proposals(status, limit)}, dumps=dumps)

    async def proposal(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        proposal_id = request.match_info["id"]
        if not HEX64_RE.fullmatch(proposal_id):
            raise ApiError("invalid_hash", "a proposal id is the 64 hex characters of its propose transaction's hash")
        found = self.service.proposal(proposal_id.lower())
        if found is None:
            raise ApiError("unknown_proposal", f"no proposal {proposal_id.lower()} on this chain")
        return web.json_response(found, dumps=dumps)


def governance_routes(service: NodeService) -> list[tuple[str, Handler, str]]:
    """(path, handler, route name) of every governance GET route, for the app to register."""
    handlers = _GovernanceHandlers(service)
    return [
        ("/v1/governance", handlers.overview, "get_governance"),
        ("/v1/governance/proposals", handlers.proposals, "list_proposals"),
        ("/v1/governance/proposals/{id}", handlers.proposal, "get_proposal"),
    ]


# --- OpenAPI ---------------------------------------------------------------------------------------

_HEX64: Mapping[str, str] = MappingProxyType({"type": "string", "pattern": "^[0-9a-f]{64}$"})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _ok(_ref("Error"), description)


def openapi_schemas() -> dict[str, Any]:
    actions = [
        {"type": "object", "title": a.name, "description": a.summary, "additionalProperties": False,
         "required": ["action", "args"],
         "properties": {"action": {"const": a.name},
                        "args": {"type": "object", "additionalProperties": False, "required": list(a.required),
                                 "properties": {k: {"description": _ARG_DOCS.get(k, k)}
                                                for k in (*a.required, *a.optional)}}}}
        for a in governance.ACTIONS.values()
    ]
    return {
        "ProposePayload": {"oneOf": actions, "description": (
            "A proposal (transaction type `propose`); its id is the transaction's hash and proposing "
            "counts as approving. Only committee members propose.")},
        "VotePayload": {"type": "object", "additionalProperties": False, "required": ["proposal", "approve"],
                        "properties": {"proposal": _HEX64, "approve": {"type": "boolean"}},
                        "description": "A vote (transaction type `vote`) of a committee member, once per proposal."},
        "Governance": {"type": "object", "required": ["enabled", "committee", "policy", "roles", "open_proposals"],
                       "description": "enabled is false on a chain whose genesis has no committee.",
                       "properties": {
                           "enabled": {"type": "boolean"},
                           "committee": {"type": ["object", "null"]},
                           "policy": {"type": "object"},
                           "roles": {"type": "object", "additionalProperties": {"type": "array", "items": _HEX64}},
                           "open_proposals": {"type": "array", "items": _HEX64},
                       }},
        "Proposal": {"type": "object",
                     "required": ["id", "proposer", "action", "args", "height", "expires_at", "votes", "status",
                                  "executed_height", "closed_height"],
                     "properties": {
                         "id": _HEX64, "proposer": _HEX64, "action": {"type": "string"}, "args": {"type": "object"},
                         "height": {"type": "integer", "description": "the block that recorded the proposal"},
                         "expires_at": {"type": "integer", "description": "the last block that takes votes"},
                         "votes": {"type": "array", "items": {
                             "type": "object", "properties": {"member": _HEX64, "approve": {"type": "boolean"}}}},
                         "status": {"type": "string", "enum": list(governance.STATUSES)},
                         "executed_height": {"type": ["integer", "null"],
                                             "description": "the block in which the action took effect"},
                         "effective_height": {"type": ["integer", "null"],
                                              "description": "the first block under the action: a validator-set "
                                                             "change's executed_height + 2, any other action's "
                                                             "executed_height"},
                         "closed_height": {"type": ["integer", "null"]},
                         "reason": {"type": "string", "description": "why it was rejected or expired"},
                         "tally": {"type": "object"},
                     }},
    }


_ARG_DOCS = MappingProxyType({
    "account": "an account address (64 hex)", "weight": "integer voting weight >= 1",
    "numerator": "threshold numerator (1..denominator)", "denominator": "threshold denominator",
    "blocks": "a proposal's lifetime in blocks", "role": "issuer | auditor",
    "accounts": "open | allowlist", "issue": "anyone | issuers", "asset": "an asset symbol",
    "node_id": "a node id (64 hex: the node key's public key)", "new_node_id": "the new node id (64 hex)",
    "p2p_url": "ws://host:port or wss://host:port", "name": "a validator name (at most 64 characters)",
    "proof": "the new key's signature (128 hex) of b'ledgerd-rotate-key-v1:' + canonical JSON of "
             "{chain_id, new, old}",
})


def openapi_paths() -> dict[str, Any]:
    return {
        "/v1/governance": {"get": {
            "operationId": "get_governance",
            "summary": "The committee (members, weights, threshold, lifetime), the policy, the role holders "
                       "and the open proposals",
            "responses": {"200": _ok(_ref("Governance"), "Governance in force at the node's height."),
                          "400": _err("An unknown query parameter.")},
        }},
        "/v1/governance/proposals": {"get": {
            "operationId": "list_proposals",
            "summary": "Proposals, newest first",
            "parameters": [
                {"name": "status", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": list(governance.STATUSES)}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}},
            ],
            "responses": {"200": _ok({"type": "object", "properties": {
                "proposals": {"type": "array", "items": _ref("Proposal")}}}, "The proposals."),
                "400": _err("A bad status or limit (invalid_query).")},
        }},
        "/v1/governance/proposals/{id}": {"get": {
            "operationId": "get_proposal",
            "summary": "One proposal: its action, votes, tally, status and the height it took effect",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": _HEX64,
                            "description": "the hash of the propose transaction"}],
            "responses": {"200": _ok(_ref("Proposal"), "The proposal."),
                          "400": _err("Not a 64-hex id (invalid_hash)."),
                          "404": _err("No such proposal (unknown_proposal).")},
        }},
    }
