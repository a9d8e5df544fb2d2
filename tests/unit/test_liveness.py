"""A stalled chain is visible: the liveness figures and the one-line `consensus_health` the node
derives from them, the same figures in /metrics, and the CLI's wording of a 504 commit_timeout and of
`ledgerd status` when consensus cannot progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.client import LedgerClient, RequestFailed
from cli.main import describe_commit_timeout
from ledger.keys import PrivateKey
from node.liveness import Liveness, explain, quorum_of
from node.metrics import NodeMetrics
from tests.helpers.cli import run

ADDR = "ab" * 32


def view(**changes: Any) -> Liveness:
    base: dict[str, Any] = dict(
        consensus="pbft", validators=4, max_faulty=1, quorum=3, connected=4, seconds_since_commit=1.5,
        rounds_without_commit=0, syncing=False, blocks_behind=0, running=True, fatal_error=None,
        stall_rounds=3)
    base.update(changes)
    return Liveness(**base)


def as_body(live: Liveness, **extra: Any) -> dict[str, Any]:
    return {"consensus_health": live.health, "liveness": live.to_json(), **extra}


# --- what the node reports ------------------------------------------------------------------------


def test_quorum_is_the_engines_own_else_what_the_engine_kind_implies() -> None:
    assert quorum_of("pbft", 4, {"max_faulty": 1, "quorum": 3}) == (1, 3)
    assert quorum_of("pbft", 7, {}) == (2, 5)
    assert quorum_of("raft", 4, {"leader": None}) == (1, 3)
    assert quorum_of("raft", 5, {}) == (2, 3)
    assert quorum_of("raft", 1, {}) == (0, 1)


def test_health_names_the_worst_problem_first() -> None:
    assert view().health == "ok"
    assert view(connected=3).health == "ok"  # f = 1 down: still committing
    lost = view(connected=2, rounds_without_commit=9, syncing=True, blocks_behind=4)
    assert lost.health == "stalled: only 2 of the 3 validators needed are connected"
    assert view(connected=1).health == "stalled: only 1 of the 3 validators needed is connected"
    assert view(syncing=True, blocks_behind=12, rounds_without_commit=9).health == "syncing: 12 blocks behind"
    assert view(rounds_without_commit=2).health == "ok"
    assert view(rounds_without_commit=3).health == "stalled: 3 round timeouts without a commit"
    assert view(consensus="raft", rounds_without_commit=5).health == "stalled: 5 election timeouts without a commit"
    assert view(running=False, fatal_error="storage failure: disk full", connected=0).health == \
        "halted: storage failure: disk full"
    assert view(running=False).health.startswith("stopped")


def test_the_json_and_the_gauges_carry_the_same_figures() -> None:
    live = view(connected=2, seconds_since_commit=40.2, rounds_without_commit=7)
    assert live.to_json() == {"validators": 4, "max_faulty": 1, "quorum": 3, "validators_connected": 2,
                              "seconds_since_commit": 40.2, "rounds_without_commit": 7}
    metrics = NodeMetrics()
    metrics.watch_liveness(lambda: live.gauges())
    samples = {s.name: s.value for family in text_string_to_metric_families(metrics.render().decode())
               for s in family.samples}
    assert samples["ledgerd_validators_connected"] == 2
    assert samples["ledgerd_quorum"] == 3
    assert samples["ledgerd_seconds_since_commit"] == 40.2
    assert samples["ledgerd_rounds_without_commit"] == 7
    assert samples["ledgerd_consensus_ok"] == 0
    assert view().gauges()["consensus_ok"] == 1


def test_explain_says_what_the_chain_is_doing() -> None:
    lost = view(connected=2, seconds_since_commit=40.2)
    assert explain(as_body(lost)) == \
        "the chain has not committed for 40 s and only 2 of the 3 validators needed are connected"
    assert explain(as_body(view(seconds_since_commit=3.4))) == \
        "the chain last committed 3 s ago; 4 of 4 validators are connected (3 needed)"
    assert explain(as_body(view(syncing=True, blocks_behind=5))) == "this node is catching up (5 blocks behind)"
    assert explain({}) == ""  # an older node's answer: nothing made up


# --- what the CLI prints ------------------------------------------------------------------------------


def test_a_commit_timeout_is_worded_as_accepted_not_refused_and_says_why() -> None:
    body = as_body(view(connected=2, seconds_since_commit=40.2), hash=ADDR, waited_s=3.0,
                   error={"code": "commit_timeout", "message": "accepted, not committed within 3s"})
    line = describe_commit_timeout(body)
    assert line.startswith(f"transaction {ADDR} accepted, not committed within 3 s; the chain has not "
                           "committed for 40 s and only 2 of the 3 validators needed are connected; "), line
    assert "refused" not in line and "ledgerd status" in line
    # An older node without the view: the node's own message, still not called a refusal.
    old = describe_commit_timeout({"hash": ADDR, "error": {"code": "commit_timeout", "message": "late"}})
    assert "refused" not in old and "(the node said: late)" in old


def test_tx_wait_prints_the_nodes_view_when_the_commit_times_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.pem"
    PrivateKey.generate().save(key)
    body = as_body(view(connected=2, seconds_since_commit=40.2), hash=ADDR, waited_s=3.0,
                   error={"code": "commit_timeout", "message": "accepted, not committed within 3s"})

    def timed_out(self: LedgerClient, tx: dict[str, Any], wait: bool = False,
                  wait_timeout_s: float | None = None) -> dict[str, Any]:
        assert wait and wait_timeout_s == 3.0
        raise RequestFailed(504, "commit_timeout", body["error"]["message"], body)

    monkeypatch.setattr(LedgerClient, "submit", timed_out)
    code, out, err = run(["tx", "transfer", "--key", str(key), "--to", ADDR, "--amount", "1", "--chain-id", "c",
                          "--nonce", "0", "--wait", "--timeout", "3"], capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"ledgerd: error: transaction {ADDR} accepted, not committed within 3 s; the chain "
                          "has not committed for 40 s and only 2 of the 3 validators needed are connected"), err
    assert "refused" not in err and len(err.strip().splitlines()) == 1


def test_status_warns_on_stderr_when_consensus_is_not_ok(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"height": 7, **as_body(view(connected=2, seconds_since_commit=12.0))}
    monkeypatch.setattr(LedgerClient, "status", lambda self: answer)
    code, out, err = run(["status"], capsys)
    assert code == 0 and json.loads(out) == answer
    assert err == ("ledgerd: warning: the chain has not committed for 12 s and only 2 of the 3 validators "
                   "needed are connected\n")
    answer.update(as_body(view()))
    code, out, err = run(["status"], capsys)
    assert code == 0 and err == ""
