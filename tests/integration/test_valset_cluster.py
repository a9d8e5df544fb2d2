"""Validator-set changes on a PBFT cluster of real `ledgerd start` processes under an outside
client's load, driven with the CLI like the runbook (docs/validators.md): an observer written by
`ledgerd testnet --observers 1` is voted in with `add-validator` (a validator is killed with
`kill -9` while the change is decided, and restarted after it is in force) and signs blocks from its
activation height; an original validator is then retired with `remove-validator` and killed
(`kill -9`); another one's key is rotated (`rotate-validator-key`, the node restarted with the new
key); every node shows the new set, one chain, nothing acknowledged lost, supply conserved, and a
node wiped afterwards syncs from genesis through every change to the same hashes, and serves the
proof bundle of a transaction after the changes byte for byte as a validator it synced from does.

Every child is killed by PID in a finally; waits poll with deadlines.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ledger import keys
from tests.integration.test_governance_cluster import N, wait_for
from tests.integration.test_observer_cluster import OBSERVER, ObservedCluster, _load, _raw, running

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedCluster]:
    with running(ObservedCluster(tmp_path_factory.mktemp("valset"))) as c:
        yield c


def seals(cluster: ObservedCluster, k: int, height: int) -> set[str]:
    block: dict[str, Any] = cluster.get(k, f"/v1/blocks/{height}")
    return {s["validator"] for s in block["certificate"]["seals"]}


def decide(cluster: ObservedCluster, *args: str, before_vote: Callable[[], None] | None = None) -> dict[str, Any]:
    """Propose a change with committee member 0 and pass it with member 1's vote (`before_vote` runs
    in between: the change is then decided after it, so anything it does precedes the activation)."""
    members = sorted((cluster.net / "committee").glob("member*.pem"))
    proposed = cluster.gov("propose", *args, "--key", str(members[0]), "--wait")
    if before_vote is not None:
        before_vote()
    voted = cluster.gov("vote", proposed["proposal"], "--approve", "--key", str(members[1]), "--wait", node=1)
    assert voted["status"] == "executed", voted
    shown: dict[str, Any] = cluster.gov("show", proposed["proposal"])
    assert shown["effective_height"] == shown["executed_height"] + 2
    return shown


def kill(cluster: ObservedCluster, k: int) -> None:
    """kill -9 node k and reap it."""
    cluster.procs[k].kill()
    cluster.procs[k].wait(timeout=30)


def test_add_an_observer_then_retire_a_validator_under_load(cluster: ObservedCluster) -> None:
    ids = [cluster.client(k).status()["node_id"] for k in range(N + 1)]
    new_id, retired = ids[OBSERVER], ids[3]
    supply = sum(cluster.client(0).account(a.address)["balances"].get("LDG", 0) for a in cluster.accounts)
    stop, committed = threading.Event(), []
    loader = threading.Thread(target=_load, args=(cluster, stop, committed), daemon=True)
    loader.start()
    try:
        wait_for(lambda: len(committed) >= 3, 60, "load to commit")
        dry = cluster.gov("propose", "add-validator", "--node-id", new_id, "--p2p-url",
                          f"wss://127.0.0.1:{cluster.base + 1100}", "--name", "observer0", "--key",
                          str(sorted((cluster.net / "committee").glob("member*.pem"))[0]), "--dry-run")
        assert dry["validator_set_after"]["summary"] == "after this change n=5, f=1, quorum 4"
        # node2 is killed (kill -9) while the change is being decided, and comes back after its
        # activation: it takes up the new set from its own stored chain and block sync.
        added = decide(cluster, "add-validator", "--node-id", new_id, "--p2p-url",
                       f"wss://127.0.0.1:{cluster.base + 1100}", "--name", "observer0",
                       before_vote=lambda: kill(cluster, 2))
        at = added["effective_height"]
        wait_for(lambda: cluster.client(OBSERVER).status()["role"] == "validator", 60, "the observer to be a validator")
        wait_for(lambda: cluster.height(0) >= at + 2, 60, "blocks under the new set without node2")
        cluster.start(2)
        cluster.wait_ready(2)
        for k in range(N + 1):
            wait_for(lambda k=k: cluster.height(k) >= at + 3, 60, f"node{k} past the activation height")
        wait_for(lambda: [v["node_id"] for v in cluster.client(2).status()["validators"]] == ids[:4] + [new_id],
                 60, "the restarted node2 to show the new set")
        # From the activation height on, blocks need 4 of 5 seals; the new validator signs.
        assert all(len(seals(cluster, 0, h)) >= 4 for h in range(at, at + 3))
        assert all(not (seals(cluster, 0, h) - set(ids[:4])) for h in range(1, at))
        wait_for(lambda: any(new_id in seals(cluster, 0, h) for h in range(at, cluster.height(0) + 1)), 60,
                 "a certificate with the new validator's seal")

        removed = decide(cluster, "remove-validator", "--node-id", retired)
        gone_at = removed["effective_height"]
        wait_for(lambda: cluster.height(0) >= gone_at, 60, "the removal to activate")
        kill(cluster, 3)  # the retired validator; the other four carry on
        before = len(committed)
        wait_for(lambda: len(committed) >= before + 5, 60, "load to commit without the retired validator")
        assert all(retired not in seals(cluster, 0, h) for h in range(gone_at, cluster.height(0) + 1))

        # Rotate node1's key: the new key signs the request; node1 restarts with it (an observer
        # until the activation height, then the validator in node1's old place).
        new_key = keys.PrivateKey.generate()
        new_key_file = cluster.net / "node1-new-key.pem"
        new_key.save(new_key_file)
        rotated = decide(cluster, "rotate-validator-key", "--node-id", ids[1], "--new-key", str(new_key_file))
        cluster.procs[1].terminate()
        cluster.procs[1].wait(timeout=30)
        shutil.copy(new_key_file, cluster.homes[1] / "node_key.pem")
        cluster.start(1)
        cluster.wait_ready(1)
        wait_for(lambda: cluster.height(0) >= rotated["effective_height"] + 2, 60, "the rotation to activate")
        wait_for(lambda: cluster.client(1).status()["role"] == "validator", 60, "node1 to vote with its new key")
        before = len(committed)
        wait_for(lambda: len(committed) >= before + 3, 60, "load to commit after the rotation")
        time.sleep(0.5)
        assert all(ids[1] not in seals(cluster, 0, h)
                   for h in range(rotated["effective_height"], cluster.height(0) + 1))
    finally:
        stop.set()
        loader.join(timeout=30)

    live = [0, 1, 2, OBSERVER]
    expected = [ids[0], new_key.address, ids[2], new_id]
    for k in live:
        wait_for(lambda k=k: [v["node_id"] for v in cluster.client(k).status()["validators"]] == expected, 60,
                 f"node{k} to show the new set")
    # The loader saw its last transaction committed on one node; the others may be a block behind.
    top = max(cluster.height(k) for k in live)
    for k in live:
        wait_for(lambda k=k: cluster.height(k) >= top, 60, f"node{k} at height {top}")
    height = min(cluster.height(k) for k in live)
    hashes = [cluster.get(0, f"/v1/blocks/{h}")["hash"] for h in range(1, height + 1)]
    for k in live[1:]:
        assert [cluster.get(k, f"/v1/blocks/{h}")["hash"] for h in range(1, height + 1)] == hashes
    for tx_hash in committed:
        assert cluster.client(OBSERVER).transaction(tx_hash)["status"] == "committed"
    assert sum(cluster.client(0).account(a.address)["balances"].get("LDG", 0) for a in cluster.accounts) == supply

    # An offline proof of a transaction after the three changes: the bundle walks them from genesis.
    bundle = cluster.net / "proof.json"
    cluster.cli("proof", committed[-1], "--node", cluster.urls[0], "--out", str(bundle))
    verified = cluster.cli("verify", str(bundle), "--genesis", str(cluster.homes[0] / "genesis.json"))
    summary = json.loads(verified.stdout)
    assert summary["validator_changes"] == 3 and summary["validators"] == 4, summary
    assert {s["node_id"] for s in summary["signers"]} <= set(expected)

    # A wiped node replays from genesis through every change, each block under its own set.
    cluster.procs[2].kill()
    cluster.procs[2].wait(timeout=30)
    shutil.rmtree(cluster.homes[2] / "data")
    cluster.start(2)
    cluster.wait_ready(2)
    wait_for(lambda: cluster.height(2) >= height, 90, "the wiped node to resync")
    assert [cluster.get(2, f"/v1/blocks/{h}")["hash"] for h in range(1, height + 1)] == hashes
    assert [v["node_id"] for v in cluster.client(2).status()["validators"]] == expected
    # Block sync hands over each block with the certificate its source stored, as it does to an
    # observer; the resynced node may take blocks from different peers, so its bundle after the three
    # changes equals the others' but for which quorum of seals each certificate holds, and every
    # certificate in it is one that some other node stored for that block.
    path = f"/v1/transactions/{committed[-1]}/proof"
    resynced = _raw(cluster, 2, path)
    others = [json.loads(_raw(cluster, k, path)) for k in (0, 1, OBSERVER)]
    mine = json.loads(resynced)
    assert all(_without_certificates(o) == _without_certificates(mine) for o in others)
    assert mine["certificate"] in [o["certificate"] for o in others]
    for i, change in enumerate(mine["validator_changes"]):
        assert change["certificate"] in [o["validator_changes"][i]["certificate"] for o in others]
    bundle.write_bytes(resynced)
    again = json.loads(cluster.cli("verify", str(bundle), "--genesis", str(cluster.homes[0] / "genesis.json")).stdout)
    assert again["validator_changes"] == 3 and again["tx"] == committed[-1], again


def _without_certificates(bundle: dict[str, Any]) -> dict[str, Any]:
    """A proof bundle without its certificates (the block's and each change's): what every node of
    the chain serves identically, whichever quorum of seals it happened to store."""
    return {**{k: v for k, v in bundle.items() if k != "certificate"},
            "validator_changes": [{k: v for k, v in c.items() if k != "certificate"}
                                  for c in bundle["validator_changes"]]}
