"""A second verifier, written from docs/proofs.md alone (hashlib, json and an Ed25519 library; nothing
of ledgerd imported), run over the test vectors: it must reach the same verdict as expected.json for
every vector. If the spec left out a byte that the reference implementation hashes, this fails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "proofs"
HEX = set("0123456789abcdef")


class Invalid(Exception):
    def __init__(self, check: str) -> None:
        super().__init__(check)
        self.check = check


def jcs(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ed25519(public_hex: str, signature_hex: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def is_hex(value: Any, length: int | None = None) -> bool:
    return isinstance(value, str) and set(value) <= HEX and len(value) % 2 == 0 and value != "" \
        and (length is None or len(value) == length)


def inclusion(leaf: bytes, index: int, size: int, path: list[str], root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, h = index, size - 1, sha(b"\x00" + leaf)
    for c in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            h = sha(b"\x01" + bytes.fromhex(c) + h)
            if fn % 2 == 0:
                while fn != 0 and fn % 2 == 0:
                    fn >>= 1
                    sn >>= 1
        else:
            h = sha(b"\x01" + h + bytes.fromhex(c))
        fn >>= 1
        sn >>= 1
    return sn == 0 and h == root


V1_FIELDS = {"chain_id", "height", "prev_hash", "timestamp", "proposer", "tx_count", "tx_root", "app_hash"}


def signers(genesis: dict[str, Any], validators: list[str], header: dict[str, Any], header_hash: bytes,
            cert: Any) -> list[str]:
    n = len(validators)
    chain = header["chain_id"]
    if genesis["consensus"] == "raft":
        if not isinstance(cert, dict) or set(cert) != {"engine", "term", "leader", "signature"} \
                or cert["engine"] != "raft" or type(cert["term"]) is not int or cert["term"] < 1 \
                or cert["leader"] not in validators or not is_hex(cert["signature"]):
            raise Invalid("certificate")
        message = b"ledgerd-raft-commit-v1:" + jcs({"chain_id": chain, "hash": header_hash.hex(),
                                                     "height": header["height"], "term": cert["term"]})
        if not ed25519(cert["leader"], cert["signature"], message):
            raise Invalid("certificate")
        return [cert["leader"]]
    if not isinstance(cert, dict) or set(cert) != {"height", "round", "block_hash", "seals"} \
            or cert["height"] != header["height"] or cert["block_hash"] != header_hash.hex() \
            or type(cert["round"]) is not int or not 0 <= cert["round"] <= 4294967294 \
            or not isinstance(cert["seals"], list) or len(cert["seals"]) > n:
        raise Invalid("certificate")
    message = (b"ledgerd-bft-v1:" + bytes([3, len(chain)]) + chain.encode("ascii")
               + header["height"].to_bytes(8, "big") + cert["round"].to_bytes(4, "big") + header_hash)
    seen: list[str] = []
    for seal in cert["seals"]:
        if not isinstance(seal, dict) or set(seal) != {"validator", "signature"} \
                or seal["validator"] not in validators or seal["validator"] in seen or not is_hex(seal["signature"]) \
                or not ed25519(seal["validator"], seal["signature"], message):
            raise Invalid("certificate")
        seen.append(seal["validator"])
    f = (n - 1) // 3
    if len(seen) < -(-(n + f + 1) // 2):
        raise Invalid("certificate")
    return seen


def header_ok(header: Any, genesis: dict[str, Any]) -> bool:
    return isinstance(header, dict) and set(header) in (V1_FIELDS, V1_FIELDS | {"receipts_root", "version"}) \
        and header.get("version", 2) == 2 and header["chain_id"] == genesis["chain_id"] \
        and type(header["height"]) is int and 1 <= header["height"] <= 2**63 - 1 \
        and type(header["tx_count"]) is int and header["tx_count"] >= 0


def set_at(genesis: dict[str, Any], changes: list[dict[str, Any]], height: int) -> list[str]:
    validators = [v["node_id"] for v in genesis["validators"]]
    for change in changes:
        if change["activation_height"] <= height:
            validators = change["validators"]
    return validators


CHANGE_FIELDS = {"activation_height", "validators", "header", "certificate", "tx_hash", "tx_index", "receipt_path"}


def walk(genesis: dict[str, Any], changes: Any, height: int) -> list[str]:
    """The "Validator-set changes" section: each change checked in order from the genesis set; the
    set in force at `height`."""
    if not isinstance(changes, list):
        raise Invalid("validator_changes")
    done: list[dict[str, Any]] = []
    for change in changes:
        if not isinstance(change, dict) or set(change) != CHANGE_FIELDS or not header_ok(change["header"], genesis):
            raise Invalid("validator_changes")
        header, a, validators = change["header"], change["activation_height"], change["validators"]
        if "version" not in header or type(a) is not int or not header["height"] < a <= height \
                or (done and header["height"] <= done[-1]["header"]["height"]) \
                or not isinstance(validators, list) or not validators or len(set(validators)) != len(validators) \
                or not all(is_hex(v, 64) for v in validators) or not is_hex(change["tx_hash"], 64) \
                or type(change["tx_index"]) is not int or not 0 <= change["tx_index"] < header["tx_count"] \
                or not isinstance(change["receipt_path"], list) or len(change["receipt_path"]) > 64 \
                or not all(is_hex(c, 64) for c in change["receipt_path"]):
            raise Invalid("validator_changes")
        try:
            signers(genesis, set_at(genesis, done, header["height"]), header,
                    sha(b"ledgerd-block-v1:" + jcs(header)), change["certificate"])
        except Invalid:
            raise Invalid("validator_changes") from None
        digest = hashlib.sha256(jcs(validators)).hexdigest()
        message = f"validator-set change: in force from height {a}; validators sha256 {digest}"
        receipt = {"code": "ok", "message": message}
        if not inclusion(bytes.fromhex(change["tx_hash"]) + jcs(receipt), change["tx_index"], header["tx_count"],
                         change["receipt_path"], bytes.fromhex(header["receipts_root"])):
            raise Invalid("validator_changes")
        done.append(change)
    return set_at(genesis, done, height)


def verify(bundle_bytes: bytes, genesis: dict[str, Any]) -> dict[str, Any]:
    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise Invalid("format")
        return dict(pairs)

    b = json.loads(bundle_bytes, object_pairs_hook=no_dupes)
    common = {"format", "kind", "chain_id", "genesis_hash", "header", "certificate", "validator_changes"}
    tx_fields = {"tx", "tx_index", "tx_path", "receipt", "receipt_path"}
    if not isinstance(b, dict) or b.get("format") != "ledgerd-proof-v1" \
            or set(b) != (common if b.get("kind") == "header" else common | tx_fields) \
            or b["kind"] not in ("header", "transaction"):
        raise Invalid("format")
    if b["chain_id"] != genesis["chain_id"] or b["genesis_hash"] != sha(b"ledgerd-genesis-v1:" + jcs(genesis)).hex():
        raise Invalid("genesis")
    header = b["header"]
    if not header_ok(header, genesis) or (b["kind"] == "transaction" and "version" not in header):
        raise Invalid("header")
    header_hash = sha(b"ledgerd-block-v1:" + jcs(header))
    validators = walk(genesis, b["validator_changes"], header["height"])
    signed_by = signers(genesis, validators, header, header_hash, b["certificate"])
    if b["kind"] == "header":
        return {"height": header["height"], "signers": signed_by}
    tx = b["tx"]
    if not isinstance(tx, dict) or set(tx) != {"body", "signature"} or not isinstance(tx["body"], dict) \
            or set(tx["body"]) != {"chain_id", "sender", "nonce", "type", "payload"} \
            or type(tx["body"]["nonce"]) is not int or tx["body"]["nonce"] < 0 \
            or tx["body"]["chain_id"] != header["chain_id"] or not is_hex(tx["signature"], 128):
        raise Invalid("tx")
    signing = b"ledgerd-tx-v1:" + jcs(tx["body"])
    if not ed25519(tx["body"]["sender"], tx["signature"], signing):
        raise Invalid("tx_signature")
    tx_hash = sha(signing)
    index = b["tx_index"]
    if type(index) is not int or not 0 <= index < header["tx_count"]:
        raise Invalid("tx_index")
    if not inclusion(tx_hash, index, header["tx_count"], b["tx_path"], bytes.fromhex(header["tx_root"])):
        raise Invalid("tx_path")
    receipt = b["receipt"]
    if not isinstance(receipt, dict) or not {"code"} <= set(receipt) <= {"code", "message"}:
        raise Invalid("receipt")
    leaf = tx_hash + jcs(receipt)
    if not inclusion(leaf, index, header["tx_count"], b["receipt_path"], bytes.fromhex(header["receipts_root"])):
        raise Invalid("receipt_path")
    return {"tx": tx_hash.hex(), "height": header["height"], "result": receipt, "signers": signed_by}


def test_an_independent_verifier_written_from_the_spec_agrees_with_every_vector() -> None:
    expected = json.loads((VECTORS / "expected.json").read_text())
    for entry in expected:
        genesis = json.loads((VECTORS / entry["genesis"]).read_text())
        try:
            verify((VECTORS / entry["file"]).read_bytes(), genesis)
        except Invalid as exc:
            assert not entry["valid"] and exc.check == entry["check"], (entry, exc.check)
        else:
            assert entry["valid"], f"{entry['file']} verified, expected check {entry['check']} to fail"


def test_the_merkle_vectors_follow_the_spec() -> None:
    def mth(leaves: list[bytes]) -> bytes:
        if not leaves:
            return sha(b"")
        if len(leaves) == 1:
            return sha(b"\x00" + leaves[0])
        k = 1
        while k * 2 < len(leaves):
            k *= 2
        return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))

    for tree in json.loads((VECTORS / "merkle.json").read_text()):
        leaves = [bytes.fromhex(x) for x in tree["leaves"]]
        assert mth(leaves).hex() == tree["root"]
        for i, path in enumerate(tree["paths"]):
            assert inclusion(leaves[i], i, len(leaves), path, bytes.fromhex(tree["root"]))
