"""Proof bundles: built from a stored chain with real certificates, verified offline; every field
of a bundle matters, and the check that fails is the one named for that field."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ledger.proof as proof
from cli.main import main
from cli.proof import certificate_signers
from ledger.block import decode_block, make_block
from ledger.errors import Rejected
from ledger.merkle import inclusion_proof, merkle_root, verify_inclusion
from ledger.proof import ProofError, ValidatorChange, encode_bundle, validator_set_at, verify_bundle
from ledger.tx import Record, Transaction, sign_tx
from tests.helpers.chain import key, transfer
from tests.helpers.proofs import ProofChain, pbft_certificate


def three_txs(chain: ProofChain) -> list[Transaction]:
    a, b, _ = chain.accounts
    return [transfer(a, 0, b, 5), sign_tx(a, chain.genesis.chain_id, 1, Record("invoice/7", "sha256:ab")),
            transfer(b, 0, a, 10**12)]  # the last one fails: insufficient funds


@pytest.fixture(params=["pbft", "raft"])
def chain(request: pytest.FixtureRequest) -> ProofChain:
    c = ProofChain(request.param)
    c.commit(three_txs(c))
    return c


def check(bundle: Any, chain: ProofChain) -> dict[str, Any]:
    return verify_bundle(bundle, chain.genesis, certificate_signers)


def failed_check(bundle: Any, chain: ProofChain) -> str:
    with pytest.raises(ProofError) as info:
        check(bundle, chain)
    return info.value.check


def test_every_transaction_of_a_block_is_proven_with_its_result_and_the_engine_says_what_finality_means(
        chain: ProofChain) -> None:
    txs = three_txs(chain)
    for index, tx in enumerate(txs):
        bundle = chain.reads.proof(tx.hash)
        assert bundle is not None
        summary = check(json.loads(encode_bundle(bundle)), chain)
        assert summary["tx"] == tx.hash and summary["index"] == index and summary["height"] == 1
        assert summary["sender"] == tx.sender and summary["type"] == tx.type
        assert summary["payload"] == tx.payload.to_json()
        assert summary["block_time"] == chain.store.load_block(1).header.timestamp  # type: ignore[union-attr]
    assert summary["result"]["code"] == "insufficient_funds" and summary["status"] == "failed"
    if chain.genesis.consensus == "pbft":
        assert summary["finality"] == "bft-quorum"
        assert [s["name"] for s in summary["signers"]] == ["node0", "node1", "node2"]
    else:
        assert summary["finality"] == "raft-leader-signature"
        assert [s["name"] for s in summary["signers"]] == ["node0"]
    assert chain.reads.proof("ab" * 32) is None


def test_a_header_bundle_proves_a_block_final_without_a_transaction(chain: ProofChain) -> None:
    bundle = chain.reads.header_proof(1)
    assert bundle is not None and bundle["kind"] == "header" and "tx" not in bundle
    summary = check(bundle, chain)
    assert summary["kind"] == "header" and summary["height"] == 1 and "tx" not in summary
    assert chain.reads.header_proof(2) is None and chain.reads.header_proof(0) is None


# --- tampering ------------------------------------------------------------------------------------


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path, value


def mutated(value: Any) -> Any:
    """A different value of the same JSON type: a hex string keeps being hex (so the change is caught by
    what it means, not by its shape)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    assert isinstance(value, str)
    if len(value) >= 2 and all(c in "0123456789abcdef" for c in value):
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return value + "x"


def expected_check(path: tuple[Any, ...], bundle: dict[str, Any]) -> str:
    top = path[0]
    if top in ("format", "kind"):
        return "format"
    if top in ("chain_id", "genesis_hash"):
        return "genesis"
    if top == "header":
        # The header's chain and version are checked first; any other field changes the block hash the
        # certificate signed.
        return "header" if path[1] in ("chain_id", "version") else "certificate"
    if top == "tx":
        return "tx" if path[1:] in (("body", "chain_id"), ("body", "type")) else "tx_signature"
    if top == "tx_index":
        return "tx_path" if bundle["tx_index"] + 1 < bundle["header"]["tx_count"] else "tx_index"
    if top == "receipt":
        return "receipt_path"
    return str(top)  # certificate, tx_path, receipt_path


def test_changing_any_field_of_a_bundle_fails_the_check_named_for_it(chain: ProofChain) -> None:
    tx = three_txs(chain)[1]
    bundle = chain.reads.proof(tx.hash)
    assert bundle is not None
    check(bundle, chain)
    tried = set()
    for path, value in leaves(bundle):
        tampered = copy.deepcopy(bundle)
        target = tampered
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = mutated(value)
        assert failed_check(tampered, chain) == expected_check(path, bundle), path
        tried.add(path[0])
    assert tried == set(bundle) - {"validator_changes"}  # an empty list has no leaf: tested below
    for field in bundle:  # every field is required, and nothing may be added
        missing = {k: v for k, v in bundle.items() if k != field}
        assert failed_check(missing, chain) == "format", field
    assert failed_check({**bundle, "note": "x"}, chain) == "format"
    assert failed_check([bundle], chain) == "format"
    if chain.genesis.consensus == "pbft":  # one seal short of a quorum
        short = copy.deepcopy(bundle)
        short["certificate"]["seals"].pop()
        assert failed_check(short, chain) == "certificate"


def failure(bundle: Any, chain: ProofChain) -> str:
    with pytest.raises(ProofError) as info:
        check(bundle, chain)
    return info.value.message


def test_a_refused_certificate_says_why(chain: ProofChain) -> None:
    """`ledgerd verify`'s one line: an edited header reads as a certificate for another block."""
    bundle = chain.reads.header_proof(1)
    assert bundle is not None
    edited = copy.deepcopy(bundle)
    edited["header"]["timestamp"] += 1
    if chain.genesis.consensus == "raft":
        assert "the leader's signature does not verify for this header" in failure(edited, chain)
        edited = copy.deepcopy(bundle)
        edited["certificate"]["leader"] = key(9, b"evil").address
        assert "its leader is not one of the validators in force" in failure(edited, chain)
        return
    assert "but the header hashes to" in failure(edited, chain)
    short = copy.deepcopy(bundle)
    short["certificate"]["seals"].pop()
    assert "it holds 2 distinct seals; the quorum of 4 validators is 3" in failure(short, chain)
    stranger = copy.deepcopy(bundle)
    stranger["certificate"]["seals"][0]["validator"] = key(9, b"evil").address
    assert "or the bundle leaves out a validator-set change" in failure(stranger, chain)
    forged = copy.deepcopy(bundle)
    forged["certificate"]["seals"][0]["signature"] = forged["certificate"]["seals"][1]["signature"]
    assert "a seal's signature does not verify" in failure(forged, chain)


def test_changing_any_byte_of_a_bundle_file_either_fails_or_leaves_its_meaning_unchanged(chain: ProofChain) -> None:
    bundle = chain.reads.proof(three_txs(chain)[0].hash)
    assert bundle is not None
    raw = encode_bundle(bundle)
    accepted_changes = 0
    for i in range(len(raw) - 1):  # the final newline is not content
        replacement = b"0" if raw[i:i + 1] != b"0" else b"1"
        changed = raw[:i] + replacement + raw[i + 1:]
        try:
            parsed = proof.parse_bundle(changed)
            check(parsed, chain)
        except ProofError:
            continue
        assert parsed == bundle, f"byte {i} changed the bundle's meaning and it still verified"
        accepted_changes += 1
    assert accepted_changes == 0  # canonical JSON has no byte that does not matter


def test_another_chain_or_a_wrong_genesis_fails_the_genesis_check(chain: ProofChain) -> None:
    other = ProofChain(chain.genesis.consensus, validators=4, accounts=2)  # same chain id, other genesis
    bundle = chain.reads.proof(three_txs(chain)[0].hash)
    with pytest.raises(ProofError) as info:
        verify_bundle(bundle, other.genesis, certificate_signers)
    assert info.value.check == "genesis"


def test_a_bundle_with_a_validator_change_this_chain_cannot_have_made_fails_that_check(chain: ProofChain) -> None:
    chain.commit([transfer(chain.accounts[0], 2, chain.accounts[1])])
    forged_by = chain.reads.header_proof(1)
    bundle = chain.reads.proof(three_txs(chain)[0].hash)
    assert forged_by is not None and bundle is not None
    change = {"activation_height": 2, "validators": [key(9, b"evil").address],
              "header": forged_by["header"], "certificate": forged_by["certificate"]}
    header_bundle = chain.reads.header_proof(2)
    assert header_bundle is not None
    header_bundle["validator_changes"] = [change]
    assert failed_check(header_bundle, chain) == "validator_changes"
    bundle["validator_changes"] = [{"activation_height": 1}]
    assert failed_check(bundle, chain) == "validator_changes"


def test_the_walk_from_genesis_uses_each_change_from_its_activation_height(monkeypatch: pytest.MonkeyPatch) -> None:
    """What issue 12 plugs in: once a header can commit to a change (`change_is_committed`), a bundle
    carries the changes from genesis; leaving one out leaves the old set in force, which did not sign."""
    c = ProofChain("pbft", validators=4)
    a, b = c.accounts[:2]
    c.commit([transfer(a, 0, b)])
    c.commit([transfer(a, 1, b)])
    new_set = [key(i, b"next") for i in range(4)]
    # From height 3 the new set signs (as if block 2 had made the change, activating at 3).
    block3 = c.commit([transfer(a, 2, b)], signers=[0])  # stored certificate replaced below
    certificate = pbft_certificate(block3, new_set, [0, 1, 2])
    change_source = c.reads.header_proof(2)
    assert change_source is not None
    change = {"activation_height": 3, "validators": [k.address for k in new_set],
              "header": change_source["header"], "certificate": change_source["certificate"],
              "tx_hash": "00" * 32, "tx_index": 0, "receipt_path": []}
    bundle = c.reads.header_proof(3)
    assert bundle is not None
    bundle["certificate"] = certificate
    monkeypatch.setattr(proof, "change_is_committed", lambda change: None)
    assert failed_check(bundle, c) == "certificate"  # the change left out: the genesis set did not sign
    bundle["validator_changes"] = [change]
    summary = check(bundle, c)
    assert summary["validator_changes"] == 1 and len(summary["signers"]) == 3
    changes = [ValidatorChange(3, tuple(k.address for k in new_set), block3.header, certificate)]
    genesis_set = c.genesis.validator_ids
    assert validator_set_at(genesis_set, changes, 2) == genesis_set
    assert validator_set_at(genesis_set, changes, 3) == changes[0].validators


def test_a_version_1_block_has_no_transaction_proof_but_its_header_is_proven() -> None:
    c = ProofChain("pbft")
    tx = transfer(c.accounts[0], 0, c.accounts[1])
    block = c.commit([tx], version=1)
    assert block.header.version == 1 and "version" not in block.header.to_json()
    with pytest.raises(Rejected) as info:
        c.reads.proof(tx.hash)
    assert info.value.code == "proof_unavailable"
    bundle = c.reads.header_proof(1)
    assert bundle is not None
    assert check(bundle, c)["header_version"] == 1
    # A transaction bundle built around a version-1 header is refused for what it cannot prove.
    v2 = ProofChain("pbft")
    v2.commit([transfer(v2.accounts[0], 0, v2.accounts[1])])
    forged = v2.reads.proof(tx.hash)
    assert forged is not None
    forged["header"] = bundle["header"]
    assert failed_check(forged, c) == "header"


def test_version_1_blocks_decode_and_hash_as_before_and_unknown_versions_are_refused() -> None:
    c = ProofChain("pbft")
    tx = transfer(c.accounts[0], 0, c.accounts[1])
    v1 = make_block(c.genesis.chain_id, 1, "11" * 32, 5, c.validators[0].address, (tx,), "22" * 32)
    assert decode_block(v1.encode()).hash == v1.hash == v1.header.hash()
    assert sorted(v1.header.to_json()) == ["app_hash", "chain_id", "height", "prev_hash", "proposer", "timestamp",
                                           "tx_count", "tx_root"]
    v2 = make_block(c.genesis.chain_id, 1, "11" * 32, 5, c.validators[0].address, (tx,), "22" * 32,
                    receipts=[_Ok()])
    assert v2.header.version == 2 and decode_block(v2.encode()).header == v2.header
    assert v2.hash != v1.hash
    for bad in ({**v2.header.to_json(), "version": 3}, {**v2.header.to_json(), "version": 1},
                {k: v for k, v in v2.header.to_json().items() if k != "receipts_root"}):
        data = json.dumps({"header": bad, "txs": [tx.to_json()]}).encode()
        with pytest.raises(Rejected):
            decode_block(data)


class _Ok:
    def encode(self) -> bytes:
        return b'{"code":"ok"}'


# --- Merkle audit paths ---------------------------------------------------------------------------


SEEDS = range(12)  # seeded random loops: the same cases on every run, no extra dependency


@pytest.mark.parametrize("seed", SEEDS)
def test_every_audit_path_leads_to_the_root_and_no_path_works_for_another_index(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5):
        size = rng.randint(1, 40)
        items = list({rng.randbytes(rng.randint(0, 40)) for _ in range(size)})
        size = len(items)
        root = merkle_root(items)
        paths = [inclusion_proof(items, index) for index in range(size)]
        for index, item in enumerate(items):
            assert verify_inclusion(item, index, size, paths[index], root)
            for other in range(size):
                if other != index:
                    assert not verify_inclusion(item, other, size, paths[index], root)
                    assert not verify_inclusion(item, index, size, paths[other], root)


def _random_block(rng: random.Random, chain: ProofChain, nonces: dict[str, int]) -> list[Transaction]:
    """1 to 24 transactions of random kinds: transfers of random amounts (some more than the sender
    has, which fail), records under random keys and values."""
    txs = []
    for _ in range(rng.randint(1, 24)):
        sender, to = rng.sample(chain.accounts, 2)
        nonce = nonces.get(sender.address, 0)
        nonces[sender.address] = nonce + 1
        if rng.random() < 0.5:
            amount = rng.choice([1, rng.randint(1, 5_000), 10**12])
            txs.append(transfer(sender, nonce, to, amount))
        else:
            record = Record(f"doc/{rng.randrange(10**6)}", "sha256:" + rng.randbytes(32).hex())
            txs.append(sign_tx(sender, chain.genesis.chain_id, nonce, record))
    return txs


@pytest.mark.parametrize("seed", SEEDS)
def test_random_blocks_every_transaction_is_proven_and_no_path_proves_another_index(seed: int) -> None:
    """Random block contents: every transaction's bundle verifies (its audit paths lead to the
    header's roots); the same bundle claiming another index, or carrying another transaction's
    path, fails the path check."""
    rng = random.Random(seed)
    c = ProofChain(rng.choice(["pbft", "raft"]), accounts=4)
    nonces: dict[str, int] = {}
    for _ in range(3):
        txs = _random_block(rng, c, nonces)
        c.commit(txs)
        bundles = [c.reads.proof(tx.hash) for tx in txs]
        for index, (tx, bundle) in enumerate(zip(txs, bundles, strict=True)):
            assert bundle is not None
            summary = check(bundle, c)
            assert summary["tx"] == tx.hash and summary["index"] == index
            if len(txs) == 1:
                continue
            other = rng.choice([i for i in range(len(txs)) if i != index])
            assert failed_check({**bundle, "tx_index": other}, c) == "tx_path"
            assert failed_check({**bundle, "tx_path": bundles[other]["tx_path"]}, c) == "tx_path"  # type: ignore[index]
            assert failed_check({**bundle, "receipt_path": bundles[other]["receipt_path"]},  # type: ignore[index]
                                c) == "receipt_path"


# --- the command line -----------------------------------------------------------------------------


def test_ledgerd_verify_exit_codes_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ProofChain("pbft")
    txs = three_txs(c)
    c.commit(txs)
    genesis = tmp_path / "genesis.json"
    c.genesis.save(genesis)
    good = tmp_path / "p.json"
    good.write_bytes(encode_bundle(c.reads.proof(txs[1].hash) or {}))

    assert main(["verify", str(good), "--genesis", str(genesis)]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["tx"] == txs[1].hash and summary["result"] == {"code": "ok"} and summary["height"] == 1
    assert len(summary["signers"]) == 3 and err == ""

    text = good.read_text()
    tampered = tmp_path / "bad.json"
    tampered.write_text(text.replace('"invoice/7"', '"invoice/8"'))
    assert main(["verify", str(tampered), "--genesis", str(genesis)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "'tx_signature'" in err

    assert main(["verify", str(tmp_path / "missing.json"), "--genesis", str(genesis)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["verify", str(good), "--genesis", str(tmp_path / "nope.json")]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["verify", str(good)])
    assert exited.value.code == 2


# --- hostile files ----------------------------------------------------------------------------------


def test_hostile_bundle_files_fail_a_named_check_and_never_raise_anything_else() -> None:
    c = ProofChain("pbft")
    txs = three_txs(c)
    c.commit(txs)
    bundle = c.reads.proof(txs[1].hash)
    assert bundle is not None
    raw = encode_bundle(bundle)

    def verdict(data: bytes) -> str:
        with pytest.raises(ProofError) as info:
            check(proof.parse_bundle(data), c)
        return info.value.check

    assert verdict(b"\xff\xfe" + raw) == "format"  # not UTF-8
    assert verdict(b"[" * 100_000 + b"]" * 100_000) == "format"  # nested too deeply for any parser
    assert verdict(raw.replace(b'"tx_index":1', b'"tx_index":NaN')) == "format"
    # The same key twice: a parser taking the first would see another bundle than one taking the last.
    assert verdict(raw.replace(b'"tx_index":1', b'"tx_index":0,"tx_index":1')) == "format"
    assert verdict(b" " * (proof.MAX_BUNDLE_BYTES + 1)) == "format"
    huge = copy.deepcopy(bundle)
    huge["header"]["height"] = 2**64
    huge["certificate"]["height"] = 2**64
    assert failed_check(huge, c) == "header"
    surrogate = copy.deepcopy(bundle)
    surrogate["tx"]["body"]["payload"]["value"] = "\ud800"
    assert failed_check(surrogate, c) in ("tx", "tx_signature")
    for junk in (None, 1, "x", [], {}, {"format": proof.PROOF_FORMAT}, {"format": proof.PROOF_FORMAT, "kind": []}):
        assert failed_check(junk, c) == "format"
    for field in ("header", "certificate", "tx", "receipt"):
        for junk in (None, 1, "x", [], {}, [1, 2], {"a": {"b": []}}):
            assert failed_check({**bundle, field: junk}, c) in ("header", "certificate", "tx", "receipt"), (field, junk)
    for field in ("tx_path", "receipt_path", "validator_changes"):
        for junk in (None, 1, "x", {}, [1], ["zz" * 32], ["ab" * 32] * 65):
            assert failed_check({**bundle, field: junk}, c) == field, (field, junk)
