"""The limit a benchmark run is measured against: verifications per transaction by setup, the
ceiling and the share of it reached, and how they reach the report."""

from __future__ import annotations

import re

import pytest

from cli.bench.ceiling import ceiling_tps, cores, share, verifications_per_tx, verify_rate_per_core
from cli.bench.load import Counters
from cli.bench.report import figures, table
from cli.bench.setup import fresh_address, signed_transfers
from ledger import keys


def test_pbft_validators_each_verify_every_transaction() -> None:
    assert verifications_per_tx("pbft", 4) == 4
    assert ceiling_tps(25_000, 2, "pbft", 4) == 12_500


def test_raft_one_validator_and_catch_up_verify_once() -> None:
    assert verifications_per_tx("raft", 3) == 1  # peers' gossip is taken on trust
    assert verifications_per_tx("pbft", 1) == 1
    assert verifications_per_tx("pbft", 4, catch_up=True) == 1
    assert ceiling_tps(25_000, 2, "raft", 3) == 50_000
    assert ceiling_tps(25_000, 2, "pbft", 4, catch_up=True) == 50_000


def test_an_unknown_engine_has_no_ceiling() -> None:
    with pytest.raises(ValueError, match="no ceiling"):
        verifications_per_tx("hotstuff", 4)


def test_share_of_the_ceiling() -> None:
    assert share(2_500, 12_500) == 0.2
    assert share(100, 0) is None


def test_calibration_measures_a_positive_rate_on_this_machine() -> None:
    assert verify_rate_per_core(slices=1, slice_s=0.01) > 0
    assert cores() >= 1


def test_the_report_carries_the_ceiling_and_the_share() -> None:
    c = Counters(committed=3000)
    f = figures(c, consensus="pbft", validators=4, tx_bytes=390, offered_tps=None, duration_s=1, elapsed_s=1.0,
                cpu_cores=2, nodes=[], mode="closed-loop", verify_per_s_per_core=25_000.4, cores=2,
                ceiling_tps=12_500.2)
    assert (f["verify_per_s_per_core"], f["cores"]) == (25_000, 2)
    assert (f["ceiling_tps"], f["share_of_ceiling"]) == (12_500.2, 0.24)
    assert "12500.2 (24.0%)" in table(f)
    bare = figures(c, consensus="pbft", validators=4, tx_bytes=390, offered_tps=None, duration_s=1, elapsed_s=1.0,
                   cpu_cores=2, nodes=[], mode="closed-loop")
    assert bare["ceiling_tps"] is None and bare["share_of_ceiling"] is None
    assert re.search(r"^ceiling tx/s \(share reached\) +-$", table(bare), re.M)


def test_fresh_recipients_are_new_distinct_addresses_and_chunks_sign_the_same_load() -> None:
    senders = [keys.PrivateKey.from_seed(bytes([i]) * 32) for i in range(3)]
    salt = b"s" * 16
    whole = list(signed_transfers(senders, "chain", 0, 10, salt))
    chunked = [*signed_transfers(senders, "chain", 0, 4, salt), *signed_transfers(senders, "chain", 4, 10, salt)]
    assert [t.body for t in whole] == [t.body for t in chunked]
    recipients = {fresh_address(salt, i) for i in range(10)}
    assert len(recipients) == 10 and all(keys.is_address(a) for a in recipients)
    assert not recipients & {s.address for s in senders}
    assert fresh_address(b"t" * 16, 0) not in recipients  # another run, other accounts
    assert all(fresh_address(salt, i).encode() in whole[i].body for i in range(10))
