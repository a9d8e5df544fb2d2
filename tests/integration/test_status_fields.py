"""/v1/status names its fields for what they are: `p2p_url` is the URL peers dial (as a [peers] table
writes it), `p2p_bind` where the listener is bound, PBFT's engine height is `working_height`; and a
lone node, or one whose peers are all down, says what its consensus can do. In process, one
validator of a two-validator testnet whose peer never starts (it listens on 127.0.0.1 only)."""

from __future__ import annotations

from pathlib import Path

from cli.testnet import make_testnet
from node.node import Node, advertised_p2p_url
from tests.helpers import ports
from tests.helpers.nodes import single_node_net


def test_advertised_p2p_url_is_what_peers_dial() -> None:
    def name() -> str:
        return "ledger-host"

    assert advertised_p2p_url("", "127.0.0.1", 9001, name) == "wss://127.0.0.1:9001"
    assert advertised_p2p_url("", "127.0.0.1", 9001, name, "ws") == "ws://127.0.0.1:9001"
    assert advertised_p2p_url("", "node0", 9001, name) == "wss://node0:9001"
    assert advertised_p2p_url("", "0.0.0.0", 9001, name) == "wss://ledger-host:9001"
    assert advertised_p2p_url("", "::", 9001, name) == "wss://ledger-host:9001"
    assert advertised_p2p_url("", "::1", 9001, name) == "wss://[::1]:9001"
    assert advertised_p2p_url("wss://a.example:443", "0.0.0.0", 9001, name) == "wss://a.example:443"


async def test_p2p_url_and_bind_of_a_validator_whose_peer_is_down(tmp_path: Path) -> None:
    base = ports.free_base_port(2)
    net = make_testnet(tmp_path / "net", validators=2, base_port=base)
    p2p_port = base + 1000
    for advertise, want in (("", f"wss://127.0.0.1:{p2p_port}"), ("ws://ledger-a.example:9001",
                                                                  "ws://ledger-a.example:9001")):
        node = Node.open(net.node_homes[0], {"tick_ms": 10, "p2p_advertise_url": advertise}, environ={})
        await node.start()
        try:
            status = node.service.status()
        finally:
            await node.stop()
        assert status["p2p_url"] == want
        assert status["p2p_bind"] == f"127.0.0.1:{p2p_port}"
        # Both of two validators are needed (PBFT: n - f with f = 0), and only this one is up.
        assert status["liveness"]["validators_connected"] == 1 and status["liveness"]["quorum"] == 2
        assert status["consensus_health"] == "stalled: only 1 of the 2 validators needed is connected"
        assert status["engine"]["working_height"] == status["height"] + 1 and "height" not in status["engine"]


async def test_a_single_validator_is_its_own_quorum(tmp_path: Path) -> None:
    net = single_node_net(tmp_path)
    node = Node.open(net.home, {"tick_ms": 10}, environ={})
    await node.start()
    try:
        status = node.service.status()
    finally:
        await node.stop()
    assert status["consensus_health"] == "ok"
    assert status["liveness"] == {**status["liveness"], "validators": 1, "max_faulty": 0, "quorum": 1,
                                  "validators_connected": 1, "rounds_without_commit": 0}
    # Its committee may add a validator, so it listens for peers like any validator.
    assert status["p2p_url"] == "wss://127.0.0.1:9001"


async def test_a_lone_validator_without_a_committee_opens_no_p2p_port(tmp_path: Path) -> None:
    """One validator and no committee: the set can never change, nobody can ever join."""
    net = make_testnet(tmp_path / "net", validators=1, accounts=1, committee=0)
    node = Node.open(net.node_homes[0], {"tick_ms": 10}, environ={})
    await node.start()
    try:
        status = node.service.status()
    finally:
        await node.stop()
    assert node.network is None
    assert status["p2p_url"] is None and status["p2p_bind"] is None
