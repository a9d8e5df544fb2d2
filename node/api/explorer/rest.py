"""Paginated REST reads over the node's explorer indexes.

    GET /v1/blocks[?before=H&limit=N]                     block summaries, newest first
    GET /v1/blocks/by-hash/{hash}                         one block, as GET /v1/blocks/{height}
    GET /v1/accounts/{address}/transactions[?after=H-I&limit=N]   the account's txs, newest first
    GET /v1/accounts/{address}/records[?after=KEY&limit=N]        the account's records, key order
    GET /v1/search?q=TEXT                                 what a height, hash or address names

Every page is bounded (MAX_*_PAGE); each answer carries the cursor of the next page or null.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node.api.errors import ApiError, dumps
from node.api.query import checked_query
from node.service import NodeService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")
CURSOR_RE = re.compile(r"([0-9]{1,19})-([0-9]{1,10})")
MAX_HEIGHT = 2**63 - 1
MAX_INDEX = 2**32 - 1
DEFAULT_BLOCK_PAGE = 20
# Summaries read each block's stored JSON: a small cap keeps one request from parsing megabytes.
MAX_BLOCK_PAGE = 50
DEFAULT_TX_PAGE = 25
MAX_TX_PAGE = 100
DEFAULT_RECORD_PAGE = 25
MAX_RECORD_PAGE = 100
MAX_RECORD_KEY_BYTES = 128
MAX_SEARCH_CHARS = 200


def _limit(query: dict[str, str], default: int, ceiling: int) -> int:
    text = query.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 4 or not 1 <= int(text) <= ceiling:
        raise ApiError("invalid_query", f"limit must be an integer from 1 to {ceiling}")
    return int(text)


def _address(request: web.Request) -> str:
    value = request.match_info["address"]
    if not HEX64_RE.fullmatch(value):
        raise ApiError("invalid_address", "the account address must be 64 hex characters")
    return value.lower()


class _IndexHandlers:
    def __init__(self, service: NodeService) -> None:
        self.service = service

    async def blocks(self, request: web.Request) -> web.StreamResponse:
        query = checked_query(request, ("before", "limit"))
        limit = _limit(query, DEFAULT_BLOCK_PAGE, MAX_BLOCK_PAGE)
        before: int | None = None
        if "before" in query:
            text = query["before"]
            if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 1 <= int(text) <= MAX_HEIGHT:
                raise ApiError("invalid_query", "before must be a block height from 1")
            before = int(text)
        return web.json_response(self.service.blocks(before, limit), dumps=dumps)

    async def block_by_hash(self, request: web.Request) -> web.StreamResponse:
        checked_query(request, ())
        value = request.match_info["hash"]
        if not HEX64_RE.fullmatch(value):
            raise ApiError("invalid_hash", "a block hash is 64 hex characters")
        block = self.service.block_by_hash(value.lower())
        if block is None:
            raise ApiError("block_not_found", f"no committed block has hash {value.lower()}")
        return web.json_response(block, dumps=dumps)

    async def account_transactions(self, request: web.Request) -> web.StreamResponse:
        query = checked_query(request, ("after", "limit"))
        address = _address(request)
        limit = _limit(query, DEFAULT_TX_PAGE, MAX_TX_PAGE)
        after: tuple[int, int] | None = None
        if "after" in query:
            match = CURSOR_RE.fullmatch(query["after"])
            if match is None:
                raise ApiError("invalid_query", "after must be a cursor HEIGHT-INDEX as a previous page's "
                                                "next_after gives it")
            # Past the largest storable height or index, "after" means the same as at it.
            after = (min(int(match[1]), MAX_HEIGHT), min(int(match[2]), MAX_INDEX))
        return web.json_response(self.service.account_transactions(address, after, limit), dumps=dumps)

    async def account_records(self, request: web.Request) -> web.StreamResponse:
        query = checked_query(request, ("after", "limit"))
        address = _address(request)
        limit = _limit(query, DEFAULT_RECORD_PAGE, MAX_RECORD_PAGE)
        after = query.get("after")
        if after is not None:
            try:
                size = len(after.encode("utf-8"))
            except UnicodeEncodeError:
                size = 0
            if not 1 <= size <= MAX_RECORD_KEY_BYTES:
                raise ApiError("invalid_query", f"after must be a record key of 1 to {MAX_RECORD_KEY_BYTES} "
                                                "bytes of UTF-8")
        return web.json_response(self.service.account_records(address, after, limit), dumps=dumps)

    async def search(self, request: web.Request) -> web.StreamResponse:
        query = checked_query(request, ("q",))
        text = query.get("q")
        if text is None or not 1 <= len(text) <= MAX_SEARCH_CHARS:
            raise ApiError("invalid_query", f"q is required: 1 to {MAX_SEARCH_CHARS} characters")
        return web.json_response(self.service.search(text), dumps=dumps)


def index_routes(service: NodeService) -> list[tuple[str, Handler, str]]:
    """(path, handler, route name) of every index GET route, for the app to register."""
    handlers = _IndexHandlers(service)
    return [
        ("/v1/blocks", handlers.blocks, "list_blocks"),
        ("/v1/blocks/by-hash/{hash}", handlers.block_by_hash, "get_block_by_hash"),
        ("/v1/accounts/{address}/transactions", handlers.account_transactions, "list_account_transactions"),
        ("/v1/accounts/{address}/records", handlers.account_records, "list_account_records"),
        ("/v1/search", handlers.search, "search"),
    ]


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path items of the index routes."""
    def page(name: str, desc: str, ceiling: int, default: int) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": desc,
                "schema": {"type": "integer", "minimum": 1, "maximum": ceiling, "default": default}}

    def address_param() -> dict[str, Any]:
        return {"name": "address", "in": "path", "required": True,
                "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}

    def ok(ref: str, desc: str) -> dict[str, Any]:
        return {"description": desc, "content": {"application/json": {"schema": {"$ref": ref}}}}

    err = {"description": "An invalid path or query parameter, or (404) nothing found.",
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "/v1/blocks": {"get": {
            "operationId": "list_blocks", "summary": "Block summaries, newest first (paginated)",
            "parameters": [
                {"name": "before", "in": "query", "required": False,
                 "description": "list blocks below this height (a previous page's next_before)",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HEIGHT}},
                page("limit", "blocks per page", MAX_BLOCK_PAGE, DEFAULT_BLOCK_PAGE)],
            "responses": {"200": ok("#/components/schemas/BlockPage", "a page of block summaries"),
                          "400": err}}},
        "/v1/blocks/by-hash/{hash}": {"get": {
            "operationId": "get_block_by_hash", "summary": "A committed block by its hash",
            "parameters": [{"name": "hash", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}],
            "responses": {"200": ok("#/components/schemas/Block", "the block"), "400": err, "404": err}}},
        "/v1/accounts/{address}/transactions": {"get": {
            "operationId": "list_account_transactions",
            "summary": "Transactions involving an account (sender, recipient, named by a proposal), newest first",
            "parameters": [
                address_param(),
                {"name": "after", "in": "query", "required": False,
                 "description": "cursor HEIGHT-INDEX: a previous page's next_after",
                 "schema": {"type": "string", "pattern": "^[0-9]{1,19}-[0-9]{1,10}$"}},
                page("limit", "transactions per page", MAX_TX_PAGE, DEFAULT_TX_PAGE)],
            "responses": {"200": ok("#/components/schemas/AccountTxPage", "a page of transactions"),
                          "400": err}}},
        "/v1/accounts/{address}/records": {"get": {
            "operationId": "list_account_records", "summary": "An account's records in key order",
            "parameters": [
                address_param(),
                {"name": "after", "in": "query", "required": False,
                 "description": "list keys after this one: a previous page's next_after",
                 "schema": {"type": "string", "minLength": 1}},
                page("limit", "records per page", MAX_RECORD_PAGE, DEFAULT_RECORD_PAGE)],
            "responses": {"200": ok("#/components/schemas/RecordPage", "a page of records"), "400": err}}},
        "/v1/search": {"get": {
            "operationId": "search", "summary": "What a block height, tx or block hash, or address names",
            "parameters": [{"name": "q", "in": "query", "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SEARCH_CHARS}}],
            "responses": {"200": ok("#/components/schemas/SearchResult", "what the text names"),
                          "400": err}}},
    }


def openapi_schemas() -> dict[str, Any]:
    """The OpenAPI schemas the index routes answer with."""
    hex64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    nullable_int = {"type": ["integer", "null"]}
    return {
        "BlockSummary": {"type": "object", "required": ["height", "hash", "timestamp", "proposer", "tx_count",
                                                        "signers"],
                         "properties": {"height": {"type": "integer"}, "hash": hex64,
                                        "timestamp": {"type": "integer"}, "proposer": {"type": "string"},
                                        "tx_count": {"type": "integer"},
                                        "signers": {"type": "array", "items": {"type": "string"}}}},
        "BlockPage": {"type": "object", "required": ["blocks", "next_before"],
                      "properties": {"blocks": {"type": "array",
                                                "items": {"$ref": "#/components/schemas/BlockSummary"}},
                                     "next_before": nullable_int}},
        "AccountTx": {"type": "object", "required": ["hash", "height", "index", "sender", "type", "status",
                                                     "result"],
                      "properties": {"hash": hex64, "height": {"type": "integer"}, "index": {"type": "integer"},
                                     "sender": hex64, "type": {"type": "string"},
                                     "status": {"enum": ["committed", "failed"]},
                                     "result": {"type": "object"}}},
        "AccountTxPage": {"type": "object", "required": ["address", "transactions", "next_after"],
                          "properties": {"address": hex64,
                                         "transactions": {"type": "array",
                                                          "items": {"$ref": "#/components/schemas/AccountTx"}},
                                         "next_after": {"type": ["string", "null"]}}},
        "RecordPage": {"type": "object", "required": ["owner", "records", "next_after"],
                       "properties": {"owner": hex64,
                                      "records": {"type": "array", "items": {"type": "object"}},
                                      "next_after": {"type": ["string", "null"]}}},
        "SearchResult": {"type": "object", "required": ["kind"],
                         "properties": {"kind": {"enum": ["block", "tx", "account", "none"]},
                                        "height": {"type": "integer"}, "hash": hex64, "address": hex64,
                                        "message": {"type": "string"}}},
    }
