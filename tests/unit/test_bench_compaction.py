"""The compaction replay (python -m cli.bench.compaction): it runs end to end on a small load, and
it reads the bytes compaction wrote from LevelDB's LOG by the level compacted from."""

from __future__ import annotations

from pathlib import Path

from cli.bench.compaction import compaction_bytes, replay


def test_compaction_bytes_are_read_from_leveldbs_log(tmp_path: Path) -> None:
    log = tmp_path / "LOG"
    log.write_bytes(b"2026/12/06-04:14:21.108115 1403 Compacted 1@1 + 1@2 files => 22936441 bytes\n"
                    b"2026/12/06-04:14:21.118396 1403 compacted to: files[ 0 0 11 0 0 0 0 ]\n"
                    b"2026/12/06-04:14:25.077452 1403 Compacted 1@2 + 7@3 files => 100 bytes\n"
                    b"2026/12/06-04:14:26.077452 1403 Compacted 2@1 + 3@2 files => 8 bytes\n")
    assert compaction_bytes(log) == {1: 22936449, 2: 100}


def test_a_small_replay_reports_every_part(tmp_path: Path) -> None:
    result = replay(tmp_path / "db", transactions=1_000, block_txs=100, epoch_txs=300, absent_reads=1,
                    sequential_accounts=False)
    assert result["transfers"] == 1_000
    parts = result["background_us_per_transfer_by_part"]
    assert isinstance(parts, list) and len(parts) == 5 and all(p >= 0 for p in parts)
    assert (tmp_path / "db" / "LOG").exists()
