"""Proof bundles: one JSON file that proves a transaction's inclusion, result and finality, or a
bare header's finality, to someone holding nothing but the chain's genesis file.

The byte-exact format and the verification algorithm are specified in docs/proofs.md; this module
is the reference implementation of both sides (building a bundle from stored data, verifying one).
It is pure: the commit certificate's signatures are checked by a `CertificateCheck` handed in
(the engines live in `consensus/`, which the ledger does not import).

Verification runs a fixed sequence of named checks and stops at the first that fails, raising
`ProofError(check, message)`; `CHECKS` lists them in that order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ledger import keys, valset
from ledger.block import BlockHeader, decode_header, receipt_leaf
from ledger.encoding import canonical_json
from ledger.errors import Rejected
from ledger.genesis import Genesis
from ledger.merkle import inclusion_proof, verify_inclusion
from ledger.tx import Transaction, decode_tx

PROOF_FORMAT = "ledgerd-proof-v1"
KIND_TRANSACTION = "transaction"
KIND_HEADER = "header"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024  # a bundle grows with validator-set changes only; this is plenty
MAX_PATH_LENGTH = 64  # an audit path of a tree of at most 2^64 leaves
MAX_RECEIPT_MESSAGE_BYTES = 4096
MAX_HEIGHT = 2**63 - 1  # heights are 8-byte big-endian in storage and in PBFT signing bytes

_COMMON_FIELDS = ("certificate", "chain_id", "format", "genesis_hash", "header", "kind", "validator_changes")
BUNDLE_FIELDS = MappingProxyType({
    KIND_HEADER: tuple(sorted(_COMMON_FIELDS)),
    KIND_TRANSACTION: tuple(sorted((*_COMMON_FIELDS, "receipt", "receipt_path", "tx", "tx_index", "tx_path"))),
})
CHANGE_FIELDS = ("activation_height", "certificate", "header", "receipt_path", "tx_hash", "tx_index", "validators")

# What a valid certificate of each engine proves (the summary's `finality`).
FINALITY = MappingProxyType({
    "pbft": "bft-quorum",  # 2f+1 of 3f+1 validators signed the COMMIT: final unless more than f lie
    "raft": "raft-leader-signature",  # one validator, as leader, declared it committed: trusted nodes only
})

CHECKS = ("format", "genesis", "header", "validator_changes", "certificate", "tx", "tx_signature", "tx_index",
          "tx_path", "receipt", "receipt_path")

# (engine name, header, certificate, validators in force) -> the certificate's signers when it is
# valid for that header under those validators, None when it is not. Never raises.
CertificateCheck = Callable[[str, BlockHeader, Any, tuple[str, ...]], "tuple[str, ...] | None"]


class ProofError(Exception):
    """A bundle failed verification: `check` is the name of the first check that failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


# --- the validator set in force at a height -------------------------------------------------------


@dataclass(frozen=True)
class ValidatorChange:
    """A change of the validator set, made by the block at `header.height`, in force from
    `activation_height` on, proven by that block's certificate under the set in force before it.

    `tx_hash`, `tx_index` and `receipt_path` locate the receipt of the transaction that decided the
    change in the block's receipts tree; that receipt names the change (`change_is_committed`)."""

    activation_height: int
    validators: tuple[str, ...]
    header: BlockHeader
    certificate: Any
    tx_hash: str = ""
    tx_index: int = 0
    receipt_path: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"activation_height": self.activation_height, "validators": list(self.validators),
                "header": self.header.to_json(), "certificate": self.certificate, "tx_hash": self.tx_hash,
                "tx_index": self.tx_index, "receipt_path": list(self.receipt_path)}


def validator_set_at(genesis_validators: tuple[str, ...], changes: Sequence[ValidatorChange],
                     height: int) -> tuple[str, ...]:
    """The validator set that signs the block at `height`: the genesis set, replaced by each change
    (in order) whose activation height is at most `height`."""
    current = genesis_validators
    for change in changes:
        if change.activation_height <= height:
            current = change.validators
    return current


def change_receipt(change: ValidatorChange) -> dict[str, str]:
    """The receipt the transaction that decided `change` got (`ledger.valset.change_receipt_message`)."""
    return {"code": "ok", "message": valset.change_receipt_message(change.activation_height, change.validators)}


def change_is_committed(change: ValidatorChange) -> str | None:
    """None when `change.header` commits to the change it claims; otherwise why not.

    The transaction that decides a change gets a receipt naming it (its activation height and the
    SHA-256 of the new set's canonical JSON list); the block's receipts root commits to that
    receipt, bound to the transaction's hash, and `receipt_path` proves it is in the tree at
    `tx_index`. A version-1 header commits to no receipts, so it can prove no change."""
    header = change.header
    if header.version < 2:
        return f"header version {header.version} commits to no receipts, so to no validator-set change"
    if not 0 <= change.tx_index < header.tx_count:
        return f"tx_index {change.tx_index} is not a transaction of block {header.height}"
    leaf = receipt_leaf(change.tx_hash, canonical_json(change_receipt(change)))
    path = [bytes.fromhex(node) for node in change.receipt_path]
    if not verify_inclusion(leaf, change.tx_index, header.tx_count, path, bytes.fromhex(header.receipts_root)):
        return (f"block {header.height}'s receipts root does not hold, at transaction {change.tx_index}, the receipt "
                f"of a change to these {len(change.validators)} validators from height {change.activation_height}")
    return None


# --- building -------------------------------------------------------------------------------------


def _hex_path(path: Sequence[bytes]) -> list[str]:
    return [node.hex() for node in path]


def header_bundle(genesis_hash: str, header: BlockHeader, certificate: Any,
                  changes: Sequence[ValidatorChange] = ()) -> dict[str, Any]:
    """The bundle proving `header` final (no transaction)."""
    return {
        "format": PROOF_FORMAT,
        "kind": KIND_HEADER,
        "chain_id": header.chain_id,
        "genesis_hash": genesis_hash,
        "header": header.to_json(),
        "certificate": certificate,
        "validator_changes": [c.to_json() for c in changes],
    }


def transaction_bundle(genesis_hash: str, header: BlockHeader, certificate: Any, tx: Mapping[str, Any],
                       index: int, tx_hashes: Sequence[str], receipts: Sequence[Mapping[str, Any]],
                       changes: Sequence[ValidatorChange] = ()) -> dict[str, Any]:
    """The bundle proving transaction number `index` of the block with `header`: `tx` is its JSON,
    `tx_hashes` and `receipts` are every transaction hash and receipt of the block, in order.

    Raises ValueError for a version-1 header: its block commits to no receipts, so a result could
    not be proven."""
    if header.version < 2:
        raise ValueError(f"block {header.height} has a version-{header.version} header, which commits to no "
                         "results; proofs exist for version-2 blocks only")
    leaves = [receipt_leaf(h, canonical_json(dict(r))) for h, r in zip(tx_hashes, receipts, strict=True)]
    bundle = header_bundle(genesis_hash, header, certificate, changes)
    bundle.update({
        "kind": KIND_TRANSACTION,
        "tx": dict(tx),
        "tx_index": index,
        "tx_path": _hex_path(inclusion_proof([bytes.fromhex(h) for h in tx_hashes], index)),
        "receipt": dict(receipts[index]),
        "receipt_path": _hex_path(inclusion_proof(leaves, index)),
    })
    return bundle


def encode_bundle(bundle: Mapping[str, Any]) -> bytes:
    """The bundle's file bytes: canonical JSON and a newline."""
    return canonical_json(dict(bundle)) + b"\n"


# --- verifying ------------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins; a bundle that says two things is not one.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey("an object has the same key twice")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_bundle(raw: bytes) -> Any:
    """The parsed JSON of a bundle file; ProofError("format") when it is not strict JSON: not UTF-8,
    larger than MAX_BUNDLE_BYTES, NaN or Infinity, or an object with a repeated key."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise ProofError("format", f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ProofError("format", "the bundle is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProofError("format", f"the bundle is not valid JSON: {exc}") from None


def _hex32(value: Any, check: str, where: str) -> bytes:
    if not isinstance(value, str) or not keys.is_hex(value, 64):
        raise ProofError(check, f"{where} must be 64 lowercase hex characters")
    return bytes.fromhex(value)


def _path(value: Any, check: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PATH_LENGTH:
        raise ProofError(check, f"the audit path must be a list of at most {MAX_PATH_LENGTH} hashes")
    return [_hex32(node, check, "each audit path node") for node in value]


def _header(value: Any, check: str, where: str) -> BlockHeader:
    try:
        return decode_header(value)
    except Rejected as exc:
        raise ProofError(check, f"{where}: {exc.message}") from None


def _height(value: Any, check: str, where: str) -> int:
    if type(value) is not int or value < 1:
        raise ProofError(check, f"{where} must be a positive integer")
    return value


def _changes(value: Any, genesis: Genesis, check_certificate: CertificateCheck,
             height: int) -> list[ValidatorChange]:
    """The validator-set changes of a bundle, each checked in order from the genesis set."""
    check = "validator_changes"
    if not isinstance(value, list):
        raise ProofError(check, "validator_changes must be a list")
    changes: list[ValidatorChange] = []
    for n, obj in enumerate(value):
        where = f"change {n}"
        if not isinstance(obj, dict) or sorted(obj) != list(CHANGE_FIELDS):
            raise ProofError(check, f"{where} must have exactly the fields {', '.join(CHANGE_FIELDS)}")
        header = _header(obj["header"], check, f"{where} header")
        if not 1 <= header.height <= MAX_HEIGHT:
            raise ProofError(check, f"{where} header height must be between 1 and {MAX_HEIGHT}")
        activation = _height(obj["activation_height"], check, f"{where} activation_height")
        validators = obj["validators"]
        if not isinstance(validators, list) or not validators or not all(keys.is_address(v) for v in validators) \
                or len(set(validators)) != len(validators):
            raise ProofError(check, f"{where} validators must be a non-empty list of distinct node ids")
        if header.chain_id != genesis.chain_id:
            raise ProofError(check, f"{where} is for chain {header.chain_id!r}")
        if changes and header.height <= changes[-1].header.height:
            raise ProofError(check, f"{where}, made by block {header.height}, is not after change {n - 1}, made by "
                                    f"block {changes[-1].header.height}: changes are listed oldest first")
        if not header.height < activation <= height:
            raise ProofError(check, f"{where} activates at {activation}, not after its block {header.height} "
                                    f"and at most at the proven height {height}")
        tx_hash = _hex32(obj["tx_hash"], check, f"{where} tx_hash").hex()
        tx_index = obj["tx_index"]
        if type(tx_index) is not int or tx_index < 0:
            raise ProofError(check, f"{where} tx_index must be a non-negative integer")
        path = tuple(node.hex() for node in _path(obj["receipt_path"], check))
        change = ValidatorChange(activation, tuple(validators), header, obj["certificate"], tx_hash, tx_index, path)
        in_force = validator_set_at(genesis.validator_ids, changes, header.height)
        if check_certificate(genesis.consensus, header, change.certificate, in_force) is None:
            why = why_not_final(genesis.consensus, header, change.certificate, in_force)
            raise ProofError(check, f"{where}: the certificate of block {header.height} is not valid under the "
                                    f"{len(in_force)} validators in force at that height: {why}")
        reason = change_is_committed(change)
        if reason is not None:
            raise ProofError(check, f"{where}: {reason}")
        changes.append(change)
    return changes


def why_not_final(engine: str, header: BlockHeader, certificate: Any, validators: tuple[str, ...]) -> str:
    """Why a certificate the engine's check refused proves nothing: a hint for the person who reads
    `ledgerd verify`'s one line (an edited header shows as a certificate for another block). Reads
    only the certificate's JSON; the signatures were already checked (and failed)."""
    if not isinstance(certificate, dict):
        return "it is not a certificate object"
    if engine == "raft":
        leader = certificate.get("leader")
        if leader not in validators:
            return "its leader is not one of the validators in force"
        return ("the leader's signature does not verify for this header (the header, the term or the "
                "signature was changed)")
    if certificate.get("height") != header.height:
        return f"it is for height {certificate.get('height')!r}, the header's is {header.height}"
    if certificate.get("block_hash") != header.hash():
        return (f"it is for block {str(certificate.get('block_hash'))[:16]}, but the header hashes to "
                f"{header.hash()[:16]}: the header (or the certificate) was changed")
    seals = certificate.get("seals")
    if not isinstance(seals, list):
        return "it has no list of seals"
    signers = [seal.get("validator") for seal in seals if isinstance(seal, dict)]
    strangers = sum(1 for v in signers if v not in validators)
    if strangers:
        return (f"{strangers} of its {len(seals)} seals are by nodes not among the validators in force at this "
                "height (a seal was changed, or the bundle leaves out a validator-set change)")
    quorum = valset.bft_figures(len(validators))[1]
    if len(set(signers)) < quorum:
        return f"it holds {len(set(signers))} distinct seals; the quorum of {len(validators)} validators is {quorum}"
    return "a seal's signature does not verify (or a seal or the round is malformed)"


def _receipt(value: Any) -> bytes:
    if not isinstance(value, dict) or "code" not in value or not set(value) <= {"code", "message"}:
        raise ProofError("receipt", "the receipt must be {code} or {code, message}")
    code, message = value["code"], value.get("message")
    if not isinstance(code, str) or not code or len(code) > 64:
        raise ProofError("receipt", "receipt.code must be a non-empty string of at most 64 characters")
    if "message" in value and (not isinstance(message, str) or not message
                               or len(message.encode("utf-8", "replace")) > MAX_RECEIPT_MESSAGE_BYTES):
        raise ProofError("receipt", "receipt.message, when present, must be a non-empty string")
    try:
        return canonical_json(value)
    except Rejected as exc:
        raise ProofError("receipt", exc.message) from None


def verify_bundle(bundle: Any, genesis: Genesis, check_certificate: CertificateCheck) -> dict[str, Any]:
    """Verify a parsed bundle against `genesis`; the summary of what it proves, or ProofError."""
    if not isinstance(bundle, dict) or bundle.get("format") != PROOF_FORMAT:
        raise ProofError("format", f"not a {PROOF_FORMAT} bundle")
    kind = bundle.get("kind")
    if not isinstance(kind, str) or kind not in BUNDLE_FIELDS:
        raise ProofError("format", f"kind must be {KIND_TRANSACTION!r} or {KIND_HEADER!r}")
    if tuple(sorted(bundle)) != BUNDLE_FIELDS[kind]:
        raise ProofError("format", f"a {kind} bundle has exactly the fields {', '.join(BUNDLE_FIELDS[kind])}")

    if bundle["chain_id"] != genesis.chain_id:
        raise ProofError("genesis", f"the bundle is for chain {bundle['chain_id']!r}, the genesis file for "
                                    f"{genesis.chain_id!r}")
    if bundle["genesis_hash"] != genesis.hash():
        raise ProofError("genesis", "the bundle's genesis_hash is not the hash of this genesis file")

    header = _header(bundle["header"], "header", "header")
    if header.chain_id != genesis.chain_id:
        raise ProofError("header", f"the header is for chain {header.chain_id!r}")
    if not 1 <= header.height <= MAX_HEIGHT:
        raise ProofError("header", f"the header's height must be between 1 and {MAX_HEIGHT}")
    if kind == KIND_TRANSACTION and header.version < 2:
        raise ProofError("header", f"a version-{header.version} header commits to no results; transaction "
                                   "proofs need version 2")

    changes = _changes(bundle["validator_changes"], genesis, check_certificate, header.height)
    validators = validator_set_at(genesis.validator_ids, changes, header.height)
    certificate = bundle["certificate"]
    signers = check_certificate(genesis.consensus, header, certificate, validators)
    if signers is None:
        why = why_not_final(genesis.consensus, header, certificate, validators)
        raise ProofError("certificate", f"the certificate does not prove block {header.height} "
                                        f"({header.hash()[:16]}) final under its {len(validators)} validators: {why}")

    names = {v.node_id: v.name for v in genesis.validators}
    finality = FINALITY.get(genesis.consensus, "unknown")
    summary: dict[str, Any] = {
        "valid": True,
        "kind": kind,
        "chain_id": header.chain_id,
        "height": header.height,
        "block_hash": header.hash(),
        "block_time": header.timestamp,
        "block_time_utc": _utc(header.timestamp),
        "header_version": header.version,
        "engine": genesis.consensus,
        "finality": finality,
        "signers": [{"node_id": s, "name": names.get(s)} for s in signers],  # None: not a genesis validator
        "validators": len(validators),
        "validator_changes": len(changes),
    }
    if finality == FINALITY["pbft"]:
        final = (f"final: {len(signers)} of {len(validators)} validators signed its commit, a quorum "
                 "(holds unless more than a third of them lie)")
    else:
        final = (f"declared committed by validator {names.get(signers[0], signers[0])} as Raft leader "
                 "(one trusted node's word, not a quorum)")
    if kind == KIND_HEADER:
        summary["proves"] = f"block {header.height} of chain {header.chain_id} is {final}"
        return summary
    tx, receipt = _verify_transaction(bundle, header)
    summary.update({
        "tx": tx.hash,
        "index": bundle["tx_index"],
        "sender": tx.sender,
        "nonce": tx.nonce,
        "type": tx.type,
        "payload": tx.payload.to_json(),
        "result": receipt,
        "status": "committed" if receipt.get("code") == "ok" else "failed",
        "proves": f"transaction {tx.hash} ({tx.type} by {tx.sender}) is number {bundle['tx_index']} of block "
                  f"{header.height} of chain {header.chain_id}, with result {receipt['code']!r}; the block is "
                  f"{final}",
    })
    return summary


def _utc(ms: int) -> str:
    """A header timestamp (ms since the Unix epoch) as ISO 8601 UTC."""
    when = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _verify_transaction(bundle: Mapping[str, Any], header: BlockHeader) -> tuple[Transaction, dict[str, Any]]:
    try:
        tx = decode_tx(bundle["tx"])
    except Rejected as exc:
        raise ProofError("tx", f"the transaction is malformed: {exc.message}") from None
    if tx.chain_id != header.chain_id:
        raise ProofError("tx", f"the transaction is for chain {tx.chain_id!r}")
    if not tx.signature_valid():
        raise ProofError("tx_signature", "the transaction's signature is not its sender's")
    index = bundle["tx_index"]
    if type(index) is not int or not 0 <= index < header.tx_count:
        raise ProofError("tx_index", f"tx_index must be an integer from 0 to {header.tx_count - 1} "
                                     f"(the block holds {header.tx_count})")
    tx_path = _path(bundle["tx_path"], "tx_path")
    if not verify_inclusion(bytes.fromhex(tx.hash), index, header.tx_count, tx_path, bytes.fromhex(header.tx_root)):
        raise ProofError("tx_path", f"the audit path does not lead from transaction {tx.hash[:16]} at index "
                                    f"{index} to the header's tx_root")
    receipt_bytes = _receipt(bundle["receipt"])
    receipt_path = _path(bundle["receipt_path"], "receipt_path")
    if not verify_inclusion(receipt_leaf(tx.hash, receipt_bytes), index, header.tx_count, receipt_path,
                            bytes.fromhex(header.receipts_root)):
        raise ProofError("receipt_path", "the audit path does not lead from this receipt of the transaction to "
                                         "the header's receipts_root")
    return tx, dict(bundle["receipt"])
