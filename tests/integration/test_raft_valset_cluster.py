"""Validator-set changes on a Raft cluster of real `ledgerd start` processes under an outside
client's load, driven with the CLI like the runbook (docs/validators.md): the observer written by
`ledgerd testnet --observers 1` follows as a learner, is voted in with `add-validator` (the dry run
shows Raft's figures; a validator is killed with `kill -9` while it is decided and restarted once it
is in force) and from its activation height its copies count: with two of the five
validators killed, the other three (it among them) still commit. An original validator is then
retired with `remove-validator`, the chain carries on without it, a one-step key rotation is
refused with the two-step way to do it, and the retired node, wiped, syncs from genesis through
both changes to the same hashes.

Every child is killed by PID in a finally; waits poll with deadlines.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ledger import keys
from tests.integration.test_governance_cluster import N, wait_for
from tests.integration.test_observer_cluster import OBSERVER, ObservedCluster, _load, running
from tests.integration.test_valset_cluster import decide, kill

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedCluster]:
    with running(ObservedCluster(tmp_path_factory.mktemp("raftvalset"), consensus="raft")) as c:
        yield c


def members(cluster: ObservedCluster) -> list[str]:
    return [str(p) for p in sorted((cluster.net / "committee").glob("member*.pem"))]


def engine(cluster: ObservedCluster, k: int) -> dict[str, Any]:
    status: dict[str, Any] = cluster.client(k).status()["engine"]
    return status


def test_a_learner_joins_counts_then_an_original_retires(cluster: ObservedCluster) -> None:
    ids = [cluster.client(k).status()["node_id"] for k in range(N + 1)]
    new_id, retired = ids[OBSERVER], ids[3]
    assert engine(cluster, OBSERVER)["is_validator"] is False
    stop, committed = threading.Event(), []
    loader = threading.Thread(target=_load, args=(cluster, stop, committed), daemon=True)
    loader.start()
    try:
        wait_for(lambda: len(committed) >= 3, 60, "load to commit")
        url = f"wss://127.0.0.1:{cluster.base + 1100}"
        dry = cluster.gov("propose", "add-validator", "--node-id", new_id, "--p2p-url", url, "--name",
                          "observer0", "--key", members(cluster)[0], "--dry-run")
        assert dry["validator_set_after"]["summary"] == "after this change n=5, f=2, quorum 3"
        # node2 is killed (kill -9) while the change is being decided and restarted once it is in
        # force: four of five run meanwhile, and node2 takes the new set up from its stored chain.
        added = decide(cluster, "add-validator", "--node-id", new_id, "--p2p-url", url, "--name", "observer0",
                       before_vote=lambda: kill(cluster, 2))
        at = added["effective_height"]
        wait_for(lambda: cluster.client(OBSERVER).status()["role"] == "validator", 60,
                 "the observer to be a validator")
        wait_for(lambda: cluster.height(0) >= at + 2, 60, "blocks under the new set without node2")
        cluster.start(2)
        cluster.wait_ready(2)
        for k in range(N + 1):
            wait_for(lambda k=k: cluster.height(k) >= at + 2, 60, f"node{k} past the activation height")
        voter = engine(cluster, OBSERVER)
        assert voter["is_validator"] is True and voter["validators"] == 5 and voter["quorum"] == 3
        assert voter["role"] in ("follower", "leader")

        # Five validators, a majority is three: with node2 and node3 killed, node0, node1 and the
        # newcomer commit, so the newcomer's copies count.
        kill(cluster, 2)
        kill(cluster, 3)
        before = len(committed)
        wait_for(lambda: len(committed) >= before + 3, 60, "load to commit on node0, node1 and the newcomer")
        cluster.start(2)
        cluster.wait_ready(2)

        # A one-step rotation is refused under Raft, with the two steps to take instead.
        new_key_file = cluster.net / "rotated.pem"
        keys.PrivateKey.generate().save(new_key_file)
        refused = cluster.gov("propose", "rotate-validator-key", "--node-id", ids[1], "--new-key",
                              str(new_key_file), "--key", members(cluster)[0], "--wait", check=False)
        assert isinstance(refused, subprocess.CompletedProcess) and refused.returncode != 0
        assert "add the new key (add-validator)" in refused.stdout + refused.stderr

        removed = decide(cluster, "remove-validator", "--node-id", retired)
        gone_at = removed["effective_height"]
        wait_for(lambda: cluster.height(0) >= gone_at + 1, 60, "the removal to activate")
        before = len(committed)
        wait_for(lambda: len(committed) >= before + 5, 60, "load to commit without the retired validator")
        for h in range(gone_at, cluster.height(0) + 1):
            block: dict[str, Any] = cluster.get(0, f"/v1/blocks/{h}")
            assert block["certificate"]["leader"] != retired and block["header"]["proposer"] != retired
    finally:
        stop.set()
        loader.join(timeout=30)

    live = [0, 1, 2, OBSERVER]
    expected = [ids[0], ids[1], ids[2], new_id]
    for k in live:
        wait_for(lambda k=k: [v["node_id"] for v in cluster.client(k).status()["validators"]] == expected, 60,
                 f"node{k} to show the new set")
    height = min(cluster.height(k) for k in live)
    hashes = [cluster.get(0, f"/v1/blocks/{h}")["hash"] for h in range(1, height + 1)]
    for k in live[1:]:
        assert [cluster.get(k, f"/v1/blocks/{h}")["hash"] for h in range(1, height + 1)] == hashes
    for tx_hash in committed:
        assert cluster.client(OBSERVER).transaction(tx_hash)["status"] == "committed"

    # The retired node, wiped, follows as an observer: from genesis through both changes, each
    # block checked under the set of its height.
    shutil.rmtree(cluster.homes[3] / "data")
    cluster.start(3)
    cluster.wait_ready(3)
    wait_for(lambda: cluster.height(3) >= height, 90, "the wiped node to resync")
    assert [cluster.get(3, f"/v1/blocks/{h}")["hash"] for h in range(1, height + 1)] == hashes
    assert cluster.client(3).status()["role"] == "observer"
    assert [v["node_id"] for v in cluster.client(3).status()["validators"]] == expected
