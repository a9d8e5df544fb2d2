"""The per-stage cost bench runs the node's real stages end to end: what it times is what a replica
and a node in block sync do to a transaction, and both of its stores end at the same state."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.bench import stages


def test_a_small_run_times_every_stage_and_commits_every_block(tmp_path: Path) -> None:
    result = stages.measure(tmp_path, blocks=3, block_txs=7)
    us = result["us_per_tx"]
    assert result["transactions"] == 21
    assert set(us) == set(stages.STAGES)
    assert all(us[s] > 0 for s in ("verify", "decode", "admit", "build", "check", "commit"))
    assert result["replica_us_per_tx"] == pytest.approx(sum(us[s] for s in stages.REPLICA), abs=0.05)
    assert result["sync_us_per_tx"] == pytest.approx(sum(us[s] for s in stages.SYNC), abs=0.05)
    assert result["sync_in_verifications"] == pytest.approx(result["sync_us_per_tx"] / us["verify"], abs=0.01)
    assert result["allowance_at_60pct_us"] == pytest.approx(us["verify"] * 2 / 3, abs=0.05)
    text = stages.table(result)
    assert "PBFT replica without the verify" in text and "block sync without the verify" in text


def test_the_planned_transfers_keep_each_senders_nonces_in_order() -> None:
    senders = [stages._key(b"sender", i) for i in range(3)]
    plan = stages.signed_blocks(senders, blocks=2, block_txs=4)
    seen: dict[str, list[int]] = {}
    for block in plan:
        for tx in block:
            seen.setdefault(tx.sender, []).append(tx.nonce)
            assert tx.signature_valid()
    assert all(nonces == list(range(len(nonces))) for nonces in seen.values())
    recipients = [tx.payload.to for block in plan for tx in block]  # type: ignore[attr-defined]
    assert len(set(recipients)) == len(recipients)


def test_main_prints_the_table_and_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert stages.main(["--blocks", "1", "--block-txs", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("3 transfers in 1 blocks of 3")
    assert out[-1].startswith("{") and '"us_per_tx"' in out[-1]
