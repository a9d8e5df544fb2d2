"""Generate the proof test vectors of docs/proofs/ (`./scripts/proof-vectors`; checked by
tests/unit/test_proof_vectors.py, which regenerates them and compares the bytes).

Deterministic: seeded keys, fixed times, Ed25519 signatures (deterministic by construction), canonical
JSON. The files are for someone writing a verifier in another language: a genesis per engine, valid
bundles, one tampered bundle per check with the verdict expected, the intermediate hashes of one
bundle, and Merkle trees of 0 to 8 leaves with every audit path; and a PBFT chain whose validator
set changes three times (a validator added, one removed, a key rotated), with valid bundles that
walk the changes and bundles with each part of a change tampered with; and a Raft chain whose set
changes twice (a validator added, then one removed: Raft takes no key rotation), each block
certified by its term's leader, a member of the set in force at its height, as the engine does.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.bft.messages import Kind, signing_bytes
from consensus.raft.certificate import signing_bytes as raft_signing_bytes
from ledger import keys, valset
from ledger.block import BLOCK_PREFIX, decode_header, receipt_leaf
from ledger.encoding import canonical_json, sha256_hex
from ledger.governance import decode_action
from ledger.merkle import inclusion_proof, merkle_root
from ledger.proof import encode_bundle
from ledger.tx import Propose, Record, Transaction, Vote, decode_tx, sign_tx
from tests.helpers.chain import key, transfer
from tests.helpers.proofs import ProofChain, pbft_header_certificate, raft_certificate

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


@dataclass(frozen=True)
class ValsetChain:
    """The PBFT chain whose set changes, and what its vectors need to know of it."""

    chain: ProofChain
    record: Transaction  # in the last block, under the set after all three changes
    height: int  # the last block's
    before_rotation: tuple[keys.PrivateKey, ...]  # the set in force just before the rotation


def _decide(chain: ProofChain, action: str, args: dict[str, Any], nonce: int, filler: list[Transaction],
            leader: keys.PrivateKey | None = None, term: int = 1) -> None:
    """Two blocks: member 0 proposes, member 1 votes yes (2 of 3 pass it) after a transfer, so the
    vote is transaction 1 of its block and its receipt path is not empty. Both are built by `leader`
    (under Raft, certified by it as leader of `term`); by default the first of the set in force."""
    chain_id = chain.genesis.chain_id
    propose = sign_tx(chain.members[0], chain_id, nonce, Propose(*decode_action(action, args)))
    chain.commit([propose], proposer=_place(chain, leader), term=term)
    chain.commit([filler.pop(0), sign_tx(chain.members[1], chain_id, nonce, Vote(propose.hash, True))],
                 proposer=_place(chain, leader), term=term)


def _place(chain: ProofChain, leader: keys.PrivateKey | None) -> int:
    """`leader`'s index in the set in force at the next height (0 for None)."""
    if leader is None:
        return 0
    return [v.address for v in chain.signing_set(chain.store.tip.height + 1)].index(leader.address)


def valset_chain() -> ValsetChain:
    """Blocks 1-2 add validator 4 (in force from 4), blocks 4-5 remove validator 1 (from 7), blocks
    7-8 rotate validator 2's key to a new one (from 10); block 10 holds a transfer, a record and a
    failed transfer. Every block in between holds a transfer; each is signed by its height's set."""
    chain = ProofChain("pbft", validators=4, accounts=3, committee=3)
    a, b, _ = chain.accounts
    added, rotated_to = key(4, b"node"), key(5, b"node")
    chain.add_validator_key(added)
    chain.add_validator_key(rotated_to)
    filler = [transfer(a, n, b, 1 + n) for n in range(6)]
    chain_id, v = chain.genesis.chain_id, chain.validators
    _decide(chain, "add-validator", {"node_id": added.address, "p2p_url": "wss://127.0.0.1:9004", "name": "node4"},
            0, filler)
    chain.commit([filler.pop(0)])  # block 3: the genesis set still signs
    _decide(chain, "remove-validator", {"node_id": v[1].address}, 1, filler)
    chain.commit([filler.pop(0)])  # block 6
    proof = rotated_to.sign(valset.rotation_message(chain_id, v[2].address, rotated_to.address)).hex()
    _decide(chain, "rotate-validator-key",
            {"node_id": v[2].address, "new_node_id": rotated_to.address, "proof": proof}, 2, filler)
    before_rotation = tuple(chain.signing_set(chain.store.tip.height))
    chain.commit([filler.pop(0)])  # block 9: the rotation is decided, not yet in force
    record = sign_tx(a, chain_id, 7, Record("contract/2026-0077", "sha256:" + "7c" * 32))
    chain.commit([transfer(a, 6, b, 250), record, transfer(b, 0, a, 10**12)])
    assert not filler and len(chain.valsets.changes_through(chain.store.tip.height)) == 3
    return ValsetChain(chain, record, chain.store.tip.height, before_rotation)


@dataclass(frozen=True)
class RaftValsetChain:
    """The Raft chain whose set changes, and what its vectors need to know of it."""

    chain: ProofChain
    record: Transaction  # in the last block, under the set after both changes
    height: int  # the last block's
    removed: keys.PrivateKey  # validator 0: leader of term 1, retired by the second change


def raft_valset_chain() -> RaftValsetChain:
    """Validator 0 leads term 1: blocks 1-2 add validator 4 (in force from 4), block 3 holds a
    transfer. Then validator 0 stops answering and the added validator, a member of the set of
    height 4, wins term 2 and leads from block 4 on: blocks 4-5 remove validator 0 (in force from 7),
    block 6 holds a transfer, block 7 a transfer, a record and a failed transfer. Every certificate
    is its block's leader's signature with its term, the leader a member of its height's set (the
    engine's rule 6: a leader proposes height h only when it is in the set of h)."""
    chain = ProofChain("raft", validators=4, accounts=3, committee=3)
    a, b, _ = chain.accounts
    added, removed = key(4, b"node"), chain.validators[0]
    chain.add_validator_key(added)
    filler = [transfer(a, n, b, 1 + n) for n in range(4)]
    chain_id = chain.genesis.chain_id
    _decide(chain, "add-validator", {"node_id": added.address, "p2p_url": "wss://127.0.0.1:9004", "name": "node4"},
            0, filler, leader=removed, term=1)
    chain.commit([filler.pop(0)], proposer=_place(chain, removed), term=1)  # block 3: the genesis set's
    _decide(chain, "remove-validator", {"node_id": removed.address}, 1, filler, leader=added, term=2)
    chain.commit([filler.pop(0)], proposer=_place(chain, added), term=2)  # block 6: removal decided, not in force
    record = sign_tx(a, chain_id, 5, Record("contract/2026-0078", "sha256:" + "3d" * 32))
    chain.commit([transfer(a, 4, b, 250), record, transfer(b, 0, a, 10**12)], proposer=_place(chain, added),
                 term=2)
    height = chain.store.tip.height
    assert not filler and len(chain.valsets.changes_through(height)) == 2
    assert removed.address not in chain.valsets.at(height)
    return RaftValsetChain(chain, record, height, removed)


def _raft_valset_tampers(chain: RaftValsetChain) -> tuple[tuple[str, str, Callable[[dict[str, Any]], None]], ...]:
    """Each tampered vector of the Raft chain whose set changed (changes 0 and 1: the addition and
    the removal). A Raft certificate has one signer, so a change left out is seen only where a
    certificate's leader is missing from the set the bundle leaves in force: leaving out the
    addition fails (the removal's block is led by the added validator); leaving out the removal
    alone would not (the older set holds every leader after it)."""
    last = chain.chain.store.load_block(chain.height)
    assert last is not None
    return (
        ("raft-valset-change-left-out", "validator_changes", lambda b: b["validator_changes"].pop(0)),
        # The last block certified by the removed validator, leader of term 1, a member of the set
        # before the removal only.
        ("raft-valset-certificate-pre-change-set", "certificate",
         lambda b: b.update(certificate=raft_certificate(last, chain.removed, 1))),
        ("raft-valset-change-receipt-path", "validator_changes",
         lambda b: b["validator_changes"][1]["receipt_path"].__setitem__(
             0, _flip(b["validator_changes"][1]["receipt_path"][0]))),
    )


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


def _resign_change(b: dict[str, Any], n: int, signers: list[keys.PrivateKey]) -> None:
    change = b["validator_changes"][n]
    change["certificate"] = pbft_header_certificate(decode_header(change["header"]), signers, range(len(signers)))


def _valset_tampers(chain: ValsetChain) -> tuple[tuple[str, str, Callable[[dict[str, Any]], None]], ...]:
    """Each tampered vector of the chain whose set changed: (name, the check that must fail, how
    the valid record bundle is changed). Changes 0, 1, 2: the addition, the removal, the rotation."""
    genesis_set = list(chain.chain.validators)
    last = chain.chain.store.load_block(chain.height)
    assert last is not None
    header = last.header
    before = list(chain.before_rotation)
    return (
        # The removal left out: the rotation's block (8, signed by the 4 left) is then checked under
        # the 5 of the addition, whose quorum is 4.
        ("valset-change-left-out", "validator_changes", lambda b: b["validator_changes"].pop(1)),
        # The rotation left out: the set before it is in force, and the new key is not in it.
        ("valset-last-change-left-out", "certificate", lambda b: b["validator_changes"].pop(2)),
        ("valset-changes-out-of-order", "validator_changes",
         lambda b: b["validator_changes"].insert(0, b["validator_changes"].pop(1))),
        # The rotation's block certified by the genesis set, which includes the removed validator.
        ("valset-change-certificate-wrong-set", "validator_changes",
         lambda b: _resign_change(b, 2, genesis_set[:3])),
        ("valset-change-receipt-path", "validator_changes",
         lambda b: b["validator_changes"][1]["receipt_path"].__setitem__(
             0, _flip(b["validator_changes"][1]["receipt_path"][0]))),
        ("valset-change-activation-height", "validator_changes",
         lambda b: b["validator_changes"][0].update(activation_height=b["validator_changes"][0]["activation_height"]
                                                    + 1)),
        ("valset-change-validators", "validator_changes",
         lambda b: b["validator_changes"][2]["validators"].__setitem__(1, genesis_set[2].address)),
        # The last block certified by 3 of the set before the rotation, one of them the retired key.
        ("valset-certificate-pre-change-set", "certificate",
         lambda b: b.update(certificate=pbft_header_certificate(header, before, range(3)))),
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


def _change_intermediates(bundle: dict[str, Any]) -> dict[str, Any]:
    """The values a verifier computes for the first validator-set change of the valid valset record
    bundle: the receipt that commits to it, and its leaf in the receipts tree of its block."""
    change = bundle["validator_changes"][0]
    validators = canonical_json(change["validators"])
    receipt = canonical_json({"code": "ok", "message": valset.change_receipt_message(
        change["activation_height"], change["validators"])})
    leaf = receipt_leaf(change["tx_hash"], receipt)
    return {
        "validators_canonical": validators.decode(),
        "validators_sha256": sha256_hex(validators),
        "receipt_canonical": receipt.decode(),
        "receipt_leaf_input": leaf.hex(),
        "receipt_leaf_hash": merkle_root([leaf]).hex(),
        "block_hash": decode_header(change["header"]).hash(),
    }


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
    changed = valset_chain()
    genesis = "genesis-pbft-valset.json"
    files[genesis] = (json.dumps(changed.chain.genesis.to_json(), indent=2, sort_keys=True) + "\n").encode()
    valset_record = changed.chain.reads.proof(changed.record.hash)
    assert valset_record is not None
    add("valid-pbft-valset-record.json", valset_record, genesis, None)
    for height, name in ((changed.height, "header"), (changed.height - 1, "header-rotation-pending")):
        header = changed.chain.reads.header_proof(height)
        assert header is not None
        add(f"valid-pbft-valset-{name}.json", header, genesis, None)
    for name, check, change in _valset_tampers(changed):
        bundle = copy.deepcopy(valset_record)
        change(bundle)
        add(f"tampered-{name}.json", bundle, genesis, check)
    raft_changed = raft_valset_chain()
    genesis = "genesis-raft-valset.json"
    files[genesis] = (json.dumps(raft_changed.chain.genesis.to_json(), indent=2, sort_keys=True) + "\n").encode()
    raft_record = raft_changed.chain.reads.proof(raft_changed.record.hash)
    assert raft_record is not None
    add("valid-raft-valset-record.json", raft_record, genesis, None)
    raft_header = raft_changed.chain.reads.header_proof(raft_changed.height)
    assert raft_header is not None
    add("valid-raft-valset-header.json", raft_header, genesis, None)
    # The removal left out still verifies: the set before it holds block 7's leader (the limit that
    # docs/proofs.md, "What leaving a change out does", states; a verifier must not be stricter).
    add("valid-raft-valset-record-removal-left-out.json",
        {**raft_record, "validator_changes": raft_record["validator_changes"][:1]}, genesis, None)
    for name, check, change in _raft_valset_tampers(raft_changed):
        bundle = copy.deepcopy(raft_record)
        change(bundle)
        add(f"tampered-{name}.json", bundle, genesis, check)
    add("wrong-genesis.json", record_bundle, "genesis-raft.json", "genesis")
    add("tampered-header-version-1.json", {**record_bundle, "header": v1_header}, "genesis-pbft.json", "header")
    for name, check, change in TAMPERS:
        bundle = copy.deepcopy(record_bundle)
        change(bundle)
        add(f"tampered-{name}.json", bundle, "genesis-pbft.json", check)
    files[EXPECTED_FILE] = (json.dumps(expected, indent=2) + "\n").encode()
    intermediates = {**_intermediates(record_bundle),
                     "valset_record_first_change": _change_intermediates(valset_record)}
    files["intermediates.json"] = (json.dumps(intermediates, indent=2) + "\n").encode()
    files["merkle.json"] = (json.dumps(_merkle_vectors(), indent=2) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/proofs")
    written = generate(target)
    print(f"wrote {len(written)} files to {target}", file=sys.stderr)
