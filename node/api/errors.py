"""REST error vocabulary: the one table from error code to HTTP status, and the JSON error body.

Every error the API answers has the body `{"error": {"code": "<stable_snake_case>", "message": "..."}}`.
Codes are part of the external contract (clients branch on them); messages are for people. Refusal
codes produced by the node (`SubmitOutcome.code`, `ledger.errors.Rejected.code`) map through the same
table, so a code has the same status wherever it comes from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from aiohttp import web

# Grouped by status; the comment on each group says when the API answers it.
STATUS_BY_CODE: Mapping[str, int] = MappingProxyType({
    # 400: the request itself is malformed; nothing was looked at.
    "invalid_json": 400,  # the body is not valid UTF-8 JSON
    "malformed": 400,  # valid JSON, but not a transaction of the contract's shape (types, unknown fields)
    "empty_batch": 400,  # an empty JSON array
    "invalid_query": 400,  # an unknown query parameter or a bad value for a known one
    "invalid_hash": 400,  # a path parameter that should be 64 hex characters
    "invalid_address": 400,
    "invalid_height": 400,
    "invalid_record_key": 400,
    "bad_request": 400,  # any other malformed HTTP request
    # 404: the thing asked for does not exist.
    "not_found": 404,  # no such route
    "tx_not_found": 404,
    "block_not_found": 404,
    "record_not_found": 404,
    # 405: the route exists, the method does not.
    "method_not_allowed": 405,
    # 408: the request did not arrive in time (its head or its body); the connection is closed.
    "request_timeout": 408,
    # 409: conflicts with what the node already holds.
    "nonce_used": 409,  # the sender already executed a transaction with this nonce (replays land here)
    "duplicate": 409,  # the very same transaction is already pending or committed
    "nonce_pending": 409,  # another pending transaction already holds this sender's nonce
    # 413: the request is larger than the configured limits.
    "body_too_large": 413,
    "batch_too_large": 413,
    # 417: an Expect header other than 100-continue.
    "expectation_failed": 417,
    # 422: well-formed, but refused by a ledger rule.
    "invalid_signature": 422,
    "wrong_chain_id": 422,
    "unknown_asset": 422,
    "insufficient_funds": 422,
    "invalid_amount": 422,
    "invalid_asset": 422,
    "asset_exists": 422,
    "record_too_large": 422,
    "nonce_gap": 422,  # the nonce is ahead of the sender's next nonce
    "nonce_too_far": 422,  # ... by more than the mempool keeps per sender
    # Governance refusals (at submission, and as failed results when state changed before execution).
    "not_permitted": 403,  # the chain's policy does not let this sender send this (allowlist, issuers)
    "account_frozen": 403,  # the sender is frozen by the committee
    "not_a_member": 403,  # propose/vote from an account outside the committee
    "asset_frozen": 422,  # a transfer of an asset the committee froze
    "invalid_proposal": 422,  # an action that is malformed or cannot apply (no self-lockout, say why)
    "unknown_proposal": 404,  # a vote (or GET) for a proposal id this chain never saw
    "already_voted": 409,  # the member voted on this proposal already
    "proposal_closed": 409,  # the proposal is executed, rejected or expired
    "proof_unavailable": 409,  # the transaction's block has a version-1 header: no receipts to prove
    # 426: a plain GET on the WebSocket route.
    "upgrade_required": 426,
    # 429: this source already holds the most connections the node takes from one address.
    "too_many_connections": 429,
    # 503: the node cannot take this now; retry later (Retry-After says when).
    "mempool_full": 503,
    "too_many_subscribers": 503,
    "shutting_down": 503,
    # 504: the node accepted the transaction but it did not commit in time.
    "commit_timeout": 504,
    # 500: a bug; the details are in the node's log, never in the response.
    "internal_error": 500,
})

# An unknown refusal code from the node is still a refusal of this input, never a server fault.
DEFAULT_REFUSAL_STATUS = 422

# Codes after which retrying the same request later can succeed; these answers carry Retry-After.
RETRYABLE_CODES = frozenset({"mempool_full", "too_many_subscribers", "shutting_down", "too_many_connections"})

INTERNAL_ERROR_MESSAGE = "the node hit an internal error; details are in its log"


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, DEFAULT_REFUSAL_STATUS)


class ApiError(Exception):
    """An error answer raised inside a handler; the error middleware turns it into the JSON body."""

    def __init__(self, code: str, message: str, *, retry_after_s: int | None = None,
                 extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.extra = extra or {}
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return status_for(self.code)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error_response(code: str, message: str, *, retry_after_s: int | None = None,
                   extra: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error answer for `code`; extra top-level fields (e.g. "hash") go next to "error"."""
    body: dict[str, Any] = error_body(code, message)
    if extra:
        body.update(extra)
    all_headers = dict(headers or {})
    if code in RETRYABLE_CODES:
        all_headers["Retry-After"] = str(max(1, retry_after_s if retry_after_s is not None else 1))
    return web.json_response(body, status=status_for(code), headers=all_headers, dumps=dumps)


def from_api_error(exc: ApiError) -> web.Response:
    return error_response(exc.code, exc.message, retry_after_s=exc.retry_after_s, extra=exc.extra,
                          headers=exc.headers)
