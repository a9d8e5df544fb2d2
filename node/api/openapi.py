"""The OpenAPI 3.1 document of the REST API, served at GET /openapi.json.

Built in code rather than kept as a static file so the limits it quotes are the node's own and the
error codes it lists come from the one table in `node.api.errors`. Tests check that every route of the
application appears here and that real responses validate against these schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ledger.proof import KIND_HEADER, KIND_TRANSACTION, PROOF_FORMAT
from ledger.tx import ASSET_RE, CHAIN_ID_RE, MAX_RECORD_KEY_BYTES, MAX_RECORD_VALUE_BYTES, MAX_SAFE_INT
from node.api.errors import STATUS_BY_CODE
from node.api.explorer.rest import openapi_paths as index_paths
from node.api.explorer.rest import openapi_schemas as index_schemas
from node.api.governance import openapi_paths, openapi_schemas
from node.api.limits import ApiLimits

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"

# Schema fragments shared by many places of the document: read-only here, copied by `_plain` when
# the document is built, so that no caller can change what the next document says.
HEX64 = MappingProxyType({"type": "string", "pattern": "^[0-9a-f]{64}$"})
HEX128 = MappingProxyType({"type": "string", "pattern": "^[0-9a-f]{128}$"})
AMOUNT = MappingProxyType({"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INT})
ASSET = MappingProxyType({"type": "string", "pattern": f"^{ASSET_RE.pattern}$"})
MAX_HEIGHT = 2**63 - 1  # storage keys hold heights in 8 bytes
HEIGHT = MappingProxyType({"type": "integer", "minimum": 0, "maximum": MAX_HEIGHT})
# The byte limit of the slowest (4-byte) UTF-8 characters, for the character counts of JSON Schema.
UTF8_MAX_BYTES_PER_CHAR = 4


def _utf8_string(min_bytes: int, max_bytes: int, what: str) -> dict[str, Any]:
    """A string limited in UTF-8 bytes, which JSON Schema cannot count: ASCII up to the byte limit, or
    any text short enough that it fits in the limit whatever its characters (a conservative bound)."""
    return {
        "anyOf": [
            {"type": "string", "pattern": f"^[\\x00-\\x7f]{{{min_bytes},{max_bytes}}}$"},
            {"type": "string", "minLength": min_bytes, "maxLength": max_bytes // UTF8_MAX_BYTES_PER_CHAR},
        ],
        "description": f"{what}: {min_bytes} to {max_bytes} bytes of UTF-8 (the node counts bytes; this "
                       f"schema accepts ASCII up to {max_bytes} characters, other text up to "
                       f"{max_bytes // UTF8_MAX_BYTES_PER_CHAR})",
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True,
         description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": list(properties) if required is None else required}
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _schemas() -> dict[str, Any]:
    receipt = _obj({"code": {"type": "string", "description": '"ok", or the failure code of a failed tx'},
                    "message": {"type": "string"}}, ["code"])
    return {
        "Error": _obj({
            "error": _obj({"code": {"type": "string", "description": "stable snake_case; see x-error-codes"},
                           "message": {"type": "string", "description": "a sentence for people"}}),
        }, ["error"], closed=False,
            description="Every error answer. Some carry context next to `error`: `hash` (the transaction "
                        "concerned), `results` (per-entry outcomes of a refused batch), or, with "
                        "commit_timeout, `consensus_health` and `liveness` (see CommitTimeout)."),
        "CommitTimeout": _obj({
            "error": _obj({"code": {"type": "string", "const": "commit_timeout"},
                           "message": {"type": "string", "description": "a sentence for people"}}),
            "hash": {**HEX64, "description": "the transaction: accepted, so poll it for its outcome"},
            "waited_s": {"type": "number", "exclusiveMinimum": 0, "description": "how long the node waited"},
            "consensus_health": {"type": ["string", "null"],
                                 "description": "the node's consensus_health when the wait ended (as in "
                                                "/v1/status): why nothing committed, e.g. quorum lost"},
            "liveness": {"oneOf": [_ref("Liveness"), {"type": "null"}]},
        }, ["error", "hash"], closed=False,
            description="504 with wait=commit: the transaction was accepted but not committed in time. "
                        "It carries the node's view of consensus so a client can say why."),
        "Liveness": _obj({
            "validators": {"type": "integer", "minimum": 1, "description": "n: validators in force"},
            "max_faulty": {"type": "integer", "minimum": 0,
                           "description": "f: validators that may be down with the chain still committing"},
            "quorum": {"type": "integer", "minimum": 1,
                       "description": "validators that must take part for a block to commit (PBFT: n - f; "
                                      "Raft: a majority)"},
            "validators_connected": {"type": "integer", "minimum": 0,
                                     "description": "validators this node is in touch with, itself included; "
                                                    "below quorum the chain cannot commit"},
            "seconds_since_commit": {"type": "number", "minimum": 0,
                                     "description": "since the timestamp of the last committed block (an idle "
                                                    "chain commits nothing, so this grows then too)"},
            "rounds_without_commit": {"type": "integer", "minimum": 0,
                                      "description": "PBFT round timeouts or Raft election timeouts on this node "
                                                     "since its last commit (or its start)"},
        }, description="Whether consensus can progress, as this node sees it; /metrics has the same figures "
                       "as ledgerd_validators_connected, ledgerd_quorum, ledgerd_seconds_since_commit, "
                       "ledgerd_rounds_without_commit and ledgerd_consensus_ok."),
        "TransferPayload": _obj({"to": HEX64, "asset": ASSET, "amount": AMOUNT}),
        "IssuePayload": _obj({"asset": ASSET, "supply": AMOUNT}),
        "RecordPayload": _obj({
            "key": _utf8_string(1, MAX_RECORD_KEY_BYTES, "the record key"),
            "value": _utf8_string(0, MAX_RECORD_VALUE_BYTES, "the value"),
        }),
        "TransactionBody": {
            "oneOf": [_body("transfer", "TransferPayload"), _body("issue", "IssuePayload"),
                      _body("record", "RecordPayload"), _body("propose", "ProposePayload"),
                      _body("vote", "VotePayload")],
            "description": "The signed part of a transaction; `type` names the payload's shape.",
        },
        "Transaction": _obj({
            "body": _ref("TransactionBody"),
            "signature": {**HEX128,
                          "description": 'Ed25519 signature of b"ledgerd-tx-v1:" + canonical_json(body)'},
        }, description="A signed transaction. Unknown fields anywhere are refused (400 malformed)."),
        "Accepted": _obj({"hash": HEX64, "status": {"type": "string", "const": "pending"}}),
        "BatchEntry": {"oneOf": [
            _ref("Accepted"),
            _obj({"hash": {"oneOf": [HEX64, {"type": "null"}]},
                  "status": {"type": "string", "const": "rejected"},
                  "error": _ref("ErrorDetail")}),
        ]},
        "ErrorDetail": _obj({"code": {"type": "string"}, "message": {"type": "string"}}),
        "Receipt": receipt,
        "TransactionStatus": _obj({
            "hash": HEX64,
            "status": {"type": "string", "enum": ["pending", "committed", "failed"]},
            "height": {"type": ["integer", "null"]},
            "index": {"type": ["integer", "null"], "description": "position in the block"},
            "result": {"oneOf": [receipt, {"type": "null"}]},
        }),
        "BlockHeader": _obj({
            "chain_id": {"type": "string"}, "height": {"type": "integer", "minimum": 0},
            "hash": HEX64, "prev_hash": HEX64,
            "timestamp": {"type": "integer", "description": "ms since the Unix epoch"},
            "proposer": HEX64, "tx_root": HEX64, "app_hash": HEX64, "tx_count": {"type": "integer"},
            "receipts_root": {**HEX64, "description": "header version 2: Merkle root of the block's receipts"},
            "version": {"type": "integer", "enum": [2], "description": "absent in version-1 headers"},
        }, ["chain_id", "height", "hash", "prev_hash", "timestamp", "proposer", "tx_root", "app_hash", "tx_count"],
            closed=False),
        "ProofBundle": _obj({
            "format": {"type": "string", "const": PROOF_FORMAT},
            "kind": {"type": "string", "enum": [KIND_TRANSACTION, KIND_HEADER]},
            "chain_id": {"type": "string"},
            "genesis_hash": HEX64,
            "header": {"type": "object", "description": "the block header exactly as hashed (no `hash` field)"},
            "certificate": {"type": "object", "description": "the block's commit certificate"},
            "validator_changes": {"type": "array", "items": {"type": "object"}},
            "tx": {"type": "object"},
            "tx_index": {"type": "integer", "minimum": 0},
            "tx_path": {"type": "array", "items": HEX64},
            "receipt": receipt,
            "receipt_path": {"type": "array", "items": HEX64},
        }, ["format", "kind", "chain_id", "genesis_hash", "header", "certificate", "validator_changes"],
            description="A self-contained proof, verified offline with `ledgerd verify FILE --genesis G`; "
                        "the format and the algorithm are in docs/proofs.md"),
        "BlockReceipt": _obj({"hash": HEX64, "code": {"type": "string"}, "message": {"type": "string"}},
                             ["hash", "code"], description="the result of the transaction at the same index"),
        "Block": _obj({
            "height": {"type": "integer", "minimum": 1},
            "hash": HEX64,
            "header": _ref("BlockHeader"),
            "txs": {"type": "array", "items": _ref("Transaction")},
            "receipts": {"type": "array", "items": _ref("BlockReceipt")},
            "certificate": {"description": "the commit certificate: validator signatures on the block"},
        }, ["height", "hash", "header", "txs", "receipts"], closed=False),
        "BlockEvent": _obj({
            "type": {"type": "string", "const": "block"},
            "height": {"type": "integer", "minimum": 1},
            "hash": HEX64,
            "header": _ref("BlockHeader"),
            "txs": {"type": "array", "items": _obj({
                "hash": HEX64, "index": {"type": "integer"}, "sender": HEX64, "nonce": {"type": "integer"},
                "type": {"type": "string"}, "status": {"type": "string", "enum": ["committed", "failed"]},
                "result": receipt,
            })},
            "governance": {"type": "array", "items": _obj({
                "proposal": HEX64, "action": {"type": "string"},
                "status": {"type": "string", "enum": ["executed", "rejected", "expired"]},
                "reason": {"type": "string"},
            }, ["proposal", "action", "status"]), "description": "governance proposals that closed in this block"},
        }, ["type", "height", "hash", "header", "txs"], closed=False,
            description="One /v1/events message: a committed block, its tx results and governance outcomes."),
        "StreamError": _obj({
            "type": {"type": "string", "const": "error"}, "code": {"type": "string"},
            "message": {"type": "string"},
        }, description="The last /v1/events message before the node ends a stream, e.g. code "
                       "subscriber_too_slow (close code 1008); resume with from_height."),
        "Account": _obj({
            "address": HEX64, "nonce": {"type": "integer", "minimum": 0},
            "balances": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "roles": {"type": "array", "items": {"type": "string", "enum": ["auditor", "issuer"]}},
            "frozen": {"type": "boolean", "description": "frozen by the committee: it can send nothing"},
            "allowed": {"type": "boolean", "description": "on the allowlist"},
        }, ["address", "nonce", "balances"], closed=False),
        "Record": _obj({
            "owner": HEX64, "key": {"type": "string"}, "value": {"type": "string"},
            "height": {"type": "integer"}, "tx": HEX64,
        }, closed=False),
        "Status": _obj({
            "node_id": HEX64, "chain_id": {"type": "string"},
            "consensus": {"type": "string", "enum": ["pbft", "raft"]},
            "height": {"type": "integer", "minimum": 0}, "latest_hash": {"type": "string"},
            "validators": {"type": "array", "description": "the validator set in force at this node's height "
                                                          "({node_id, name}, in proposer order)"},
            "next_validators": {"type": "array", "description": "the set deciding the next block (differs from "
                                                                "`validators` only when a change activates with it)"},
            "validator_change": {"type": ["object", "null"],
                                 "description": "a validator-set change waiting for its activation height: "
                                                "{proposal, action, effective_height, validators}"},
            "role": {"type": "string", "enum": ["validator", "observer"],
                     "description": "observer: this node's key is not in the set deciding the next block; it "
                                    "follows the chain by block sync, never votes, forwards transactions"},
            "peers": {"type": "array", "items": _obj({
                "node_id": HEX64, "name": {"type": ["string", "null"]}, "url": {"type": "string"},
                "connected": {"type": "boolean"},
                "height": {"type": ["integer", "null"], "minimum": 0,
                           "description": "the head the peer last announced (null: not heard yet)"},
            }, required=["node_id", "url", "connected"], closed=False)},
            "syncing": {"type": "boolean",
                        "description": "fetching blocks from peers (block sync) towards sync_target_height right now"},
            "sync_target_height": {"type": ["integer", "null"], "minimum": 0,
                                   "description": "the highest height the chain is known to have reached, when "
                                                  "above this node's: announced by f + 1 validators, proven by "
                                                  "certified blocks fetched, or named by the engine (a single "
                                                  "peer's claim shows only as that peer's height)"},
            "blocks_behind": {"type": "integer", "minimum": 0,
                              "description": "how far this node's height is below sync_target_height"},
            "consensus_health": {"type": "string",
                                 "description": '"ok"; or "stalled: only 2 of the 3 validators needed are '
                                                'connected", "stalled: 5 round timeouts without a commit", '
                                                '"syncing: 12 blocks behind", "halted: <why>": the worst '
                                                'problem first, in words to act on'},
            "liveness": _ref("Liveness"),
            "p2p_url": {"type": ["string", "null"],
                        "description": "the URL peers dial to reach this node, written as their [peers] lists "
                                       "write it: p2p_advertise_url if configured, else ws://p2p_host:port "
                                       "(this host's name when it binds every interface); null on a "
                                       "single-validator chain"},
            "p2p_bind": {"type": ["string", "null"],
                         "description": "host:port the p2p listener is bound to (may be 0.0.0.0)"},
            "engine": {"type": "object", "description": "the consensus engine's own state; PBFT's "
                                                        "working_height is the height being decided, one above "
                                                        "the last committed `height`"},
        }, required=["node_id", "chain_id", "consensus", "height", "latest_hash", "validators", "peers",
                     "syncing", "blocks_behind"], closed=False),
        "Health": _obj({"status": {"type": "string", "const": "ok"}, "node_id": HEX64,
                        "chain_id": {"type": "string"}}),
    }


def _body(tx_type: str, payload: str) -> dict[str, Any]:
    return _obj({
        "chain_id": {"type": "string", "pattern": f"^{CHAIN_ID_RE.pattern}$"},
        "sender": {**HEX64, "description": "the sender's Ed25519 public key, which is its address"},
        "nonce": {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT,
                  "description": "the sender's next nonce: 0, then one more per executed transaction"},
        "type": {"type": "string", "const": tx_type},
        "payload": _ref(payload),
    }, description=f"A `{tx_type}` transaction's body.")


def _error(description: str, codes: list[str], retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{description} Codes: {', '.join(codes)}.",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                               "schema": {"type": "integer", "minimum": 1}}}
    return response


def _codes(status: int) -> list[str]:
    return sorted(code for code, s in STATUS_BY_CODE.items() if s == status)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _common(*extra: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "400": _error("Malformed request: an unknown query parameter or an invalid path parameter.",
                      ["invalid_query", "invalid_hash", "invalid_address", "invalid_height",
                       "invalid_record_key", "bad_request"]),
        "405": _error("The route does not take this method (the Allow header lists those it takes).",
                      ["method_not_allowed"]),
        "417": _error("An Expect header other than 100-continue.", ["expectation_failed"]),
        "429": _error("This source address already holds the most connections the node takes from one "
                      "address (or the node its total); answered as the connection opens.",
                      ["too_many_connections"], retry_after=True),
        "500": _error("A bug in the node; details are in its log, never in the answer.", ["internal_error"]),
    }
    for status, response in extra:
        responses[status] = response
    return responses


def _path_param(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (the shared fragments are read-only mappings)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def build_openapi(limits: ApiLimits) -> dict[str, Any]:
    """The document for an API running with `limits`: a fresh structure of plain dicts and lists."""
    document: dict[str, Any] = _plain(_document(limits))
    return document


def _document(limits: ApiLimits) -> dict[str, Any]:
    submit_description = (
        "Submit one signed transaction, or a JSON array of 1 to "
        f"{limits.max_batch_txs} of them. The body may be at most {limits.max_body_bytes} bytes. "
        "A single transaction answers 202 {hash, status: pending}. An array answers 202 with one entry "
        "per transaction, in order, each accepted or carrying its own error, when at least one was accepted; "
        "when none was, it answers the status of the first refusal with that error and the entries in "
        "`results`. With `?wait=commit` (single transaction only) the answer waits for the commit: 200 with "
        "the transaction's status, or 504 commit_timeout. Resubmitting a transaction the node already "
        "holds with wait=commit is safe: it answers that transaction's outcome instead of 409 duplicate."
    )
    tx_not_found = _error("No such transaction.", ["tx_not_found"])
    paths: dict[str, Any] = {
        "/v1/transactions": {"post": {
            "operationId": "submit_transactions",
            "summary": "Submit signed transactions",
            "description": submit_description,
            "parameters": [
                {"name": "wait", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["commit"]},
                 "description": "wait until the transaction is committed; a single transaction only (an "
                                "array with wait is refused 400 invalid_query)"},
                {"name": "timeout_s", "in": "query", "required": False,
                 "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": limits.commit_wait_timeout_s},
                 "description": f"only together with wait=commit (400 invalid_query otherwise): how long "
                                f"to wait (default and maximum {limits.commit_wait_timeout_s:g})"},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                _ref("Transaction"),
                {"type": "array", "minItems": 1, "maxItems": limits.max_batch_txs,
                 "items": _ref("Transaction")},
            ]}}}},
            "responses": {
                "200": _json(_ref("TransactionStatus"), "With wait=commit: the transaction committed (its "
                                                         "result says whether it succeeded)."),
                "202": _json({"oneOf": [_ref("Accepted"), {"type": "array", "items": _ref("BatchEntry")}]},
                             "Accepted into the mempool (pending)."),
                "400": _error("Malformed body: not JSON, not a transaction of the contract's shape, wrong "
                              "types, unknown fields, an empty array, or a bad query.", _codes(400)),
                "403": _error("Refused by the chain's governance: the sender is frozen, not permitted by "
                              "the policy, or (propose, vote) not a committee member.", _codes(403)),
                "404": _error("A vote for a proposal this chain never saw.", ["unknown_proposal"]),
                "405": _error("Only POST is allowed here.", ["method_not_allowed"]),
                "408": _error(f"The body did not arrive within {limits.body_timeout_s:g}s.", ["request_timeout"]),
                "417": _error("An Expect header other than 100-continue.", ["expectation_failed"]),
                "429": _error("Too many connections from this source address.", ["too_many_connections"],
                              retry_after=True),
                "409": _error("Conflicts with the sender's nonce or a transaction the node already holds.",
                              _codes(409)),
                "413": _error("The body or the array is larger than the node's limits.", _codes(413)),
                "422": _error("Refused by a ledger rule.", _codes(422)),
                "503": _error("The mempool is full or the node is stopping; retry after Retry-After.",
                              ["mempool_full", "shutting_down"], retry_after=True),
                "504": {"description": "With wait=commit: accepted, not committed in time; `hash` says what "
                                       "to poll, `consensus_health` and `liveness` why it has not committed. "
                                       "Codes: commit_timeout.",
                        "content": {"application/json": {"schema": _ref("CommitTimeout")}}},
                "500": _error("A bug in the node; details are in its log.", ["internal_error"]),
            },
        }},
        "/v1/transactions/{hash}": {"get": {
            "operationId": "get_transaction",
            "summary": "A transaction's status: pending, committed (with height, index and result) or failed",
            "parameters": [_path_param("hash", HEX64, "the transaction hash")],
            "responses": _common(("200", _json(_ref("TransactionStatus"), "The transaction's status.")),
                                 ("404", tx_not_found)),
        }},
        "/v1/transactions/{hash}/proof": {"get": {
            "operationId": "get_transaction_proof",
            "summary": "A proof bundle of a committed transaction: inclusion, result and finality, checkable "
                       "offline against the genesis file",
            "parameters": [_path_param("hash", HEX64, "the transaction hash")],
            "responses": _common(("200", _json(_ref("ProofBundle"), "The bundle.")),
                                 ("404", _error("No committed transaction has that hash (a pending one has no "
                                                "proof yet).", ["tx_not_found"])),
                                 ("409", _error("The transaction is in a version-1 block, which commits to no "
                                                "results.", ["proof_unavailable"]))),
        }},
        "/v1/blocks/{height}/proof": {"get": {
            "operationId": "get_block_proof",
            "summary": "A proof bundle of a committed block header: its finality, checkable offline",
            "parameters": [_path_param("height", HEIGHT, "the block height")],
            "responses": _common(("200", _json(_ref("ProofBundle"), "The bundle.")),
                                 ("404", _error("No block at that height.", ["block_not_found"]))),
        }},
        "/v1/blocks/latest": {"get": {
            "operationId": "get_latest_block",
            "summary": "The last committed block",
            "responses": _common(("200", _json(_ref("Block"), "The block with its transactions, receipts and "
                                                              "commit certificate.")),
                                 ("404", _error("No block has been committed yet.", ["block_not_found"]))),
        }},
        "/v1/blocks/{height}": {"get": {
            "operationId": "get_block",
            "summary": "The committed block at a height",
            "parameters": [_path_param("height", HEIGHT, "the block height")],
            "responses": _common(("200", _json(_ref("Block"), "The block.")),
                                 ("404", _error("No block at that height.", ["block_not_found"]))),
        }},
        "/v1/accounts/{address}": {"get": {
            "operationId": "get_account",
            "summary": "An account's nonce and balances (an unknown address is an empty account)",
            "parameters": [_path_param("address", HEX64, "the account address (its public key)")],
            "responses": _common(("200", _json(_ref("Account"), "The account."))),
        }},
        "/v1/records/{owner}/{key}": {"get": {
            "operationId": "get_record",
            "summary": "The value an account stored under a key, with the height and tx that stored it",
            "parameters": [
                _path_param("owner", HEX64, "the address of the account that stored the record"),
                _path_param("key", _utf8_string(1, MAX_RECORD_KEY_BYTES, "the record key, percent-encoded"),
                            f"the record key, percent-encoded; 1 to {MAX_RECORD_KEY_BYTES} bytes of UTF-8"),
            ],
            "responses": _common(("200", _json(_ref("Record"), "The record.")),
                                 ("404", _error("No record under that key.", ["record_not_found"]))),
        }},
        "/v1/status": {"get": {
            "operationId": "get_status",
            "summary": "Node, chain and consensus status",
            "responses": _common(("200", _json(_ref("Status"), "The node's status."))),
        }},
        "/v1/events": {"get": {
            "operationId": "events",
            "summary": "WebSocket stream of committed blocks and their transaction results",
            "description": (
                "Upgrade to a WebSocket. Each committed block arrives as one JSON text message (schema "
                "BlockEvent), in height order without gaps, from `from_height` (or the next block) on; "
                "reconnect with from_height = last height + 1 to resume. The stream is one-way. It ends "
                "with close code 1000 when the node stops, 1001 when its HTTP server shuts down, and 1008 "
                f"when the client reads too slowly: over {limits.ws_send_timeout_s:g}s for one message, or "
                "so far behind that the node stops buffering for it (a StreamError message comes first). "
                f"At most {limits.max_ws_subscribers} streams at once."
            ),
            "parameters": [{"name": "from_height", "in": "query", "required": False,
                            "schema": HEIGHT, "description": "first block height to send"}],
            "responses": _common(
                ("101", {"description": "Switching to the WebSocket protocol."}),
                ("426", _error("Not a WebSocket upgrade request.", ["upgrade_required"])),
                ("503", _error("Too many event streams, or the node is shutting down.",
                               ["too_many_subscribers", "shutting_down"], retry_after=True)),
            ),
        }},
        "/healthz": {"get": {
            "operationId": "healthz",
            "summary": "Liveness: 200 while the node serves requests",
            "responses": _common(("200", _json(_ref("Health"), "The node is up."))),
        }},
        "/metrics": {"get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics in the text exposition format",
            "responses": _common(("200", {"description": "Prometheus text format 0.0.4.",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}})),
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": _common(("200", _json({"type": "object"}, "The OpenAPI document."))),
        }},
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ledgerd REST API",
            "version": API_VERSION,
            "description": (
                "Every node of a ledgerd chain serves this API. Errors always answer JSON "
                '{"error": {"code", "message"}}; the codes are stable and listed in x-error-codes with '
                "their HTTP status. Unknown routes answer 404 not_found."
            ),
        },
        "paths": {**paths, **openapi_paths(), **index_paths()},
        "components": {"schemas": {**_schemas(), **openapi_schemas(), **index_schemas()}},
        "x-error-codes": dict(sorted(STATUS_BY_CODE.items(), key=lambda item: (item[1], item[0]))),
    }
