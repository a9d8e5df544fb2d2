"""Structured concurrency for one node: no task it owns may die unseen, and stopping closes every
part even when one of them fails (CometBFT's `OnStop`: log each error and carry on).

- A task that fails (or ends) while the node runs halts the node loudly: `fatal_error`, a critical
  log line, state "halted", `wait_stopped()` returns; `stop()` then still closes the database.
- `stop()` with a part that raises logs one line for it and closes the rest, the database last.
- `ledgerd start` whose node halted that way exits 1 with the reason, after closing everything:
  a second start on the same home opens the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from cli.main import CliError
from cli.start import run_node
from cli.testnet import make_testnet
from node.api.app import ApiServer
from node.intake import TxIntake
from node.net.cluster import PeerNetwork
from node.node import Node
from storage import Store
from tests.helpers.nodes import pay, single_node_net
from tests.helpers.ports import free_base_port

pytestmark = pytest.mark.timeout(60)
WAIT_S = 10.0


async def regossip_fails(self: TxIntake) -> None:
    await asyncio.sleep(0.05)
    raise RuntimeError("boom in re-gossip")


async def test_an_owned_task_that_fails_halts_the_node_and_stop_still_closes_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    net = single_node_net(tmp_path)
    monkeypatch.setattr(TxIntake, "run_regossip", regossip_fails)
    node = Node.open(net.home, {"tick_ms": 10}, environ={})
    await node.start()
    try:
        with caplog.at_level(logging.CRITICAL, logger="ledgerd.node"):
            await asyncio.wait_for(node.wait_stopped(), WAIT_S)
        assert node.fatal_error is not None
        assert "tx-regossip" in node.fatal_error and "RuntimeError: boom in re-gossip" in node.fatal_error
        assert node.service.status()["state"] == "halted" and not node.running
        assert any(r.levelno == logging.CRITICAL and "node halted" in r.getMessage() for r in caplog.records)
        # A halted node takes nothing new.
        alice, bob, _ = net.accounts
        [outcome] = await node.service.submit([pay(alice, 0, bob).to_json()])
        assert outcome.code == "shutting_down"
    finally:
        await asyncio.wait_for(node.stop(), WAIT_S)  # does not re-raise what the task died of
    assert node.store.closed
    assert node.fatal_error is not None and "boom in re-gossip" in node.fatal_error


async def test_an_owned_task_that_ends_without_an_error_halts_the_node_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def regossip_returns(self: TxIntake) -> None:
        return None

    net = single_node_net(tmp_path)
    monkeypatch.setattr(TxIntake, "run_regossip", regossip_returns)
    node = Node.open(net.home, {"tick_ms": 10}, environ={})
    await node.start()
    try:
        await asyncio.wait_for(node.wait_stopped(), WAIT_S)
        assert node.fatal_error is not None and "tx-regossip" in node.fatal_error and "ended" in node.fatal_error
    finally:
        await node.stop()
    assert node.store.closed


async def test_a_failing_peer_network_task_halts_the_node_and_stop_still_closes_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer network's tasks are the node's too: they are started through the node's spawner."""
    async def announce_fails(self: PeerNetwork) -> None:
        raise ValueError("boom in the status announcer")

    net = make_testnet(tmp_path / "net", validators=2, accounts=1, base_port=free_base_port(2))
    monkeypatch.setattr(PeerNetwork, "_announce", announce_fails)
    node = Node.open(net.node_homes[0], {"tick_ms": 10}, environ={})
    await node.start()
    try:
        await asyncio.wait_for(node.wait_stopped(), WAIT_S)
        assert node.fatal_error is not None
        assert "p2p-status" in node.fatal_error and "boom in the status announcer" in node.fatal_error
    finally:
        await asyncio.wait_for(node.stop(), WAIT_S)
    assert node.store.closed and node.network is not None and node.network.url is None


async def test_stop_closes_every_part_even_when_one_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = single_node_net(tmp_path)
    node = Node.open(net.home, {"tick_ms": 10}, environ={})
    await node.start()
    assert node.checks.workers is not None

    async def close_fails() -> None:
        raise OSError("the worker pipe is broken")

    node.checks.workers.close = close_fails  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="ledgerd.node"):
        await asyncio.wait_for(node.stop(), WAIT_S)
    assert node.store.closed
    assert node.service.status()["state"] == "stopped"
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failures == ["stopping the signature workers failed: OSError: the worker pipe is broken"]
    await node.stop()  # stopping twice is harmless


async def test_start_exits_1_with_the_reason_after_closing_everything_when_a_task_dies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        restore_process_state: None) -> None:
    net = make_testnet(tmp_path / "net", validators=1, accounts=1)
    home = net.node_homes[0]
    monkeypatch.setattr(TxIntake, "run_regossip", regossip_fails)
    overrides: dict[str, Any] = {"rest_port": 0, "p2p_port": 0, "tick_ms": 10}
    with pytest.raises(CliError, match=re.escape("the node halted: internal error in task tx-regossip")):
        await asyncio.wait_for(run_node(home, overrides), 30)
    assert "serving" in capsys.readouterr().out
    # The database was closed on the way out: it opens again (LevelDB allows one opener).
    Store.open(home / "data", net.genesis).close()


async def test_start_closes_the_node_even_when_stopping_the_api_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        restore_process_state: None) -> None:
    """SIGTERM, and the REST server fails to stop: one line, exit 1, and the node is closed anyway."""
    net = make_testnet(tmp_path / "net", validators=1, accounts=1)
    home = net.node_homes[0]

    async def api_stop_fails(self: ApiServer) -> None:
        raise OSError("the listener went away")

    monkeypatch.setattr(ApiServer, "stop", api_stop_fails)
    running = asyncio.create_task(run_node(home, {"rest_port": 0, "p2p_port": 0, "tick_ms": 10}))
    printed = ""
    deadline = asyncio.get_running_loop().time() + 20
    while "serving" not in printed:
        assert not running.done(), running
        assert asyncio.get_running_loop().time() < deadline, "the node never announced its URL"
        await asyncio.sleep(0.05)
        printed += capsys.readouterr().out
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(CliError, match="stopping the REST API failed: OSError: the listener went away"):
        await asyncio.wait_for(running, 20)
    Store.open(home / "data", net.genesis).close()
