"""Generate the proof test vectors of docs/proofs/ (`./scripts/proof-vectors`; checked by
tests/unit/test_proof_vectors.py, which regenerates them and compares the bytes).

Deterministic: seeded keys, fixed times, Ed25519 signatures (deterministic by construction), canonical
JSON. The files are for someone writing a verifier in another language: a genesis per engine, valid
bundles, one tampered bundle per check with the verdict expected, the intermediate hashes of one
bundle, and Merkle trees of 0 to 8 leaves with every audit path.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consensus.bft.messages import Kind, signing_bytes
from consensus.raft.certificate import signing_bytes as raft_signing_bytes
from ledger.block import BLOCK_PREFIX, decode_header, receipt_leaf
from ledger.encoding import canonical_json, sha256_hex
from ledger.merkle import inclusion_proof, merkle_root
from ledger.proof import encode_bundle
from ledger.tx import Record, Transaction, decode_tx, sign_tx
from tests.helpers.chain import key, transfer
from tests.helpers.proofs import ProofChain

EXPECTED_FILE = "expected.json"


def _txs(chain: ProofChain) -> list[Transaction]:
    a, b, _ = chain.accounts
    record = Record("invoice/2026-0042", "sha256:" + "5e" * 32)
    return [transfer(a, 0, b, 250), sign_tx(a, chain.genesis.chain_id, 1, record),
            transfer(b, 0, a, 10**12)]  # fails: insufficient funds (a failed result is proven like any other)


def _chain(consensus: str) -> tuple[ProofChain, list[Transaction]]:
    chain = ProofChain(consensus, validators=4, accounts=3)
    # Block 1 as a chain started before header version 2 would hold it (version 1: no receipts_root).
    chain.commit([transfer(chain.accounts[2], 0, chain.accounts[0], 1)], version=1)
    txs = _txs(chain)
    chain.commit(txs, proposer=1)
    return chain, txs


def _flip(hex_text: str) -> str:
    return hex_text[:-1] + ("0" if hex_text[-1] != "0" else "1")


# Each tampered vector: (name, the check that must fail, how the valid pbft record bundle is changed).
TAMPERS: tuple[tuple[str, str, Callable[[dict[str, Any]], None]], ...] = (
    ("format-version", "format", lambda b: b.update(format="ledgerd-proof-v0")),
    ("format-extra-field", "format", lambda b: b.update(comment="hello")),
    ("genesis-hash", "genesis", lambda b: b.update(genesis_hash=_flip(b["genesis_hash"]))),
    ("header-chain-id", "header", lambda b: b["header"].update(chain_id="other")),
    ("header-timestamp", "certificate", lambda b: b["header"].update(timestamp=b["header"]["timestamp"] + 1)),
    ("header-receipts-root", "certificate",
     lambda b: b["header"].update(receipts_root=_flip(b["header"]["receipts_root"]))),
    ("validator-change-unprovable", "validator_changes",
     lambda b: b["validator_changes"].append({"activation_height": b["header"]["height"],
                                               "validators": [key(9, b"evil").address],
                                               "header": b["header"], "certificate": b["certificate"]})),
    ("certificate-seal-signature", "certificate",
     lambda b: b["certificate"]["seals"][0].update(signature=_flip(b["certificate"]["seals"][0]["signature"]))),
    ("certificate-below-quorum", "certificate", lambda b: b["certificate"]["seals"].pop()),
    ("tx-malformed", "tx", lambda b: b["tx"]["body"].update(nonce=-1)),
    ("tx-payload", "tx_signature", lambda b: b["tx"]["body"]["payload"].update(value="sha256:" + "00" * 32)),
    ("tx-index-out-of-range", "tx_index", lambda b: b.update(tx_index=b["header"]["tx_count"])),
    ("tx-index-other", "tx_path", lambda b: b.update(tx_index=0)),
    ("tx-path-node", "tx_path", lambda b: b["tx_path"].__setitem__(0, _flip(b["tx_path"][0]))),
    ("receipt-malformed", "receipt", lambda b: b["receipt"].update(extra=1)),
    ("receipt-result", "receipt_path", lambda b: b.update(receipt={"code": "insufficient_funds"})),
    ("receipt-path-node", "receipt_path",
     lambda b: b["receipt_path"].__setitem__(0, _flip(b["receipt_path"][0]))),
)


def _merkle_vectors() -> list[dict[str, Any]]:
    out = []
    for size in range(9):
        items = [bytes([i]) * (i + 1) for i in range(size)]  # leaf i: the byte i, repeated i+1 times
        out.append({
            "leaves": [i.hex() for i in items],
            "root": merkle_root(items).hex(),
            "paths": [[p.hex() for p in inclusion_proof(items, i)] for i in range(size)],
        })
    return out


def _intermediates(bundle: dict[str, Any]) -> dict[str, Any]:
    """The values a verifier computes on the way, for the valid pbft record bundle."""
    tx = decode_tx(bundle["tx"])
    header = decode_header(bundle["header"])
    receipt = canonical_json(bundle["receipt"])
    header_bytes = BLOCK_PREFIX + canonical_json(header.to_json())
    cert = bundle["certificate"]
    return {
        "tx_signing_bytes": tx.signing_bytes.hex(),
        "tx_signing_bytes_text": tx.signing_bytes.decode(),
        "tx_hash": tx.hash,
        "tx_leaf_hash": merkle_root([bytes.fromhex(tx.hash)]).hex(),
        "receipt_canonical": receipt.decode(),
        "receipt_leaf_input": receipt_leaf(tx.hash, receipt).hex(),
        "receipt_leaf_hash": merkle_root([receipt_leaf(tx.hash, receipt)]).hex(),
        "header_hash_input": header_bytes.hex(),
        "header_hash_input_text": header_bytes.decode(),
        "header_hash": sha256_hex(header_bytes),
        "commit_seal_signing_bytes": signing_bytes(header.chain_id, Kind.COMMIT, header.height, cert["round"],
                                                   header.hash()).hex(),
        "raft_signing_bytes_example_term_1": raft_signing_bytes(header.chain_id, header.height, header.hash(),
                                                                1).hex(),
    }


def generate(out_dir: Path) -> dict[str, bytes]:
    """Write the vector files to `out_dir`; returns them by name."""
    files: dict[str, bytes] = {}
    expected: list[dict[str, Any]] = []

    def add(name: str, bundle: dict[str, Any], genesis: str, check: str | None) -> None:
        files[name] = encode_bundle(bundle)
        expected.append({"file": name, "genesis": genesis, "valid": check is None, "check": check})

    record_bundle: dict[str, Any] = {}
    v1_header: dict[str, Any] = {}
    for consensus in ("pbft", "raft"):
        chain, txs = _chain(consensus)
        genesis = f"genesis-{consensus}.json"
        files[genesis] = (json.dumps(chain.genesis.to_json(), indent=2, sort_keys=True) + "\n").encode()
        for tx, what in zip(txs, ("transfer", "record", "failed-transfer"), strict=True):
            bundle = chain.reads.proof(tx.hash)
            assert bundle is not None
            add(f"valid-{consensus}-{what}.json", bundle, genesis, None)
            if consensus == "pbft" and what == "record":
                record_bundle = bundle
        for height, name in ((1, "header-v1"), (2, "header")):
            header = chain.reads.header_proof(height)
            assert header is not None
            add(f"valid-{consensus}-{name}.json", header, genesis, None)
            if consensus == "pbft" and height == 1:
                v1_header = header["header"]
    add("wrong-genesis.json", record_bundle, "genesis-raft.json", "genesis")
    add("tampered-header-version-1.json", {**record_bundle, "header": v1_header}, "genesis-pbft.json", "header")
    for name, check, change in TAMPERS:
        bundle = copy.deepcopy(record_bundle)
        change(bundle)
        add(f"tampered-{name}.json", bundle, "genesis-pbft.json", check)
    files[EXPECTED_FILE] = (json.dumps(expected, indent=2) + "\n").encode()
    files["intermediates.json"] = (json.dumps(_intermediates(record_bundle), indent=2) + "\n").encode()
    files["merkle.json"] = (json.dumps(_merkle_vectors(), indent=2) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/proofs")
    written = generate(target)
    print(f"wrote {len(written)} files to {target}", file=sys.stderr)
