"""A node refuses, at submission, a validator-set change that the validators it is in touch with
could not survive, saying why (n, f, quorum, how many of the remaining validators are connected),
and shows the set in force and its role in /v1/status."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.testnet import make_testnet
from ledger import keys
from ledger.governance import decode_action
from ledger.tx import Propose
from node.node import Node
from tests.helpers import ports
from tests.helpers.nodes import signed, wire

pytestmark = pytest.mark.timeout(60)


async def test_a_change_the_connected_validators_could_not_survive_is_refused(tmp_path: Path) -> None:
    base = ports.free_base_port(4)
    net = make_testnet(tmp_path / "net", validators=4, accounts=1, base_port=base)
    member = keys.PrivateKey.load(net.member_files[0])
    node = Node.open(net.node_homes[0], {"tick_ms": 10}, environ={})  # its three peers are not running
    await node.start()
    try:
        status = node.status()
        assert status["role"] == "validator"
        assert [v["node_id"] for v in status["validators"]] == list(net.node_ids)
        remove = signed(member, 0, Propose(*decode_action("remove-validator", {"node_id": net.node_ids[3]})))
        [outcome] = await node.service.submit(wire(remove))
        assert outcome.code == "invalid_proposal"
        assert outcome.message == ("after this change n=3, f=0, quorum 2; only 1 of the remaining validators "
                                   "are connected")
        unknown = signed(member, 0, Propose(*decode_action("remove-validator", {"node_id": "ef" * 32})))
        [outcome] = await node.service.submit(wire(unknown))
        assert outcome.code == "invalid_proposal" and "is not a validator" in outcome.message
    finally:
        await node.stop()


async def test_under_raft_the_refusal_counts_a_majority(tmp_path: Path) -> None:
    """The same guard on a Raft chain, with Raft's figures: f = (n - 1) // 2, a majority."""
    base = ports.free_base_port(4)
    net = make_testnet(tmp_path / "net", validators=4, accounts=1, base_port=base, consensus="raft")
    member = keys.PrivateKey.load(net.member_files[0])
    node = Node.open(net.node_homes[0], {"tick_ms": 10}, environ={})  # its three peers are not running
    await node.start()
    try:
        remove = signed(member, 0, Propose(*decode_action("remove-validator", {"node_id": net.node_ids[3]})))
        [outcome] = await node.service.submit(wire(remove))
        assert outcome.code == "invalid_proposal"
        assert outcome.message == ("after this change n=3, f=1, quorum 2; only 1 of the remaining validators "
                                   "are connected")
    finally:
        await node.stop()
