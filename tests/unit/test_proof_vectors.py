"""The test vectors of docs/proofs/: they are exactly what the generator produces now (so the docs
cannot drift from the code), and each verifies, or fails at the check, that expected.json says."""

from __future__ import annotations

import json
from pathlib import Path

from cli.proof import verify_file
from ledger.proof import ProofError
from tests.helpers.proof_vectors import EXPECTED_FILE, generate

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "proofs"


def test_the_committed_vectors_are_what_the_generator_writes(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    committed = {p.name: p.read_bytes() for p in VECTORS.iterdir() if p.is_file()}
    assert sorted(committed) == sorted(fresh), "run ./scripts/proof-vectors and commit docs/proofs"
    for name, data in fresh.items():
        assert committed[name] == data, f"docs/proofs/{name} is stale: run ./scripts/proof-vectors"


def test_every_vector_gets_the_verdict_expected_json_gives() -> None:
    expected = json.loads((VECTORS / EXPECTED_FILE).read_text())
    assert {e["check"] for e in expected if not e["valid"]} == {
        "format", "genesis", "header", "validator_changes", "certificate", "tx", "tx_signature", "tx_index",
        "tx_path", "receipt", "receipt_path"}
    for entry in expected:
        path, genesis = VECTORS / entry["file"], VECTORS / entry["genesis"]
        if entry["valid"]:
            summary = verify_file(path, genesis)
            assert summary["valid"] is True, entry
            # Signers are named as the genesis names them; one that joined later has no name there.
            names = {v["node_id"]: v["name"] for v in json.loads(genesis.read_text())["validators"]}
            assert [s["name"] for s in summary["signers"]] == [names.get(s["node_id"]) for s in summary["signers"]]
            continue
        try:
            verify_file(path, genesis)
        except ProofError as exc:
            assert exc.check == entry["check"], (entry, exc.message)
        else:
            raise AssertionError(f"{entry['file']} verified, but expected.json says check {entry['check']} fails")
