"""`ledgerd start` when the node halts by itself: a failed durable write must end the process with
exit status 1 and one line saying why, not leave an API up that answers as if all were well
(GUIDE section 5: a failed durable write halts the node with a clear message)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.errors import CliError
from cli.start import run_node
from cli.testnet import make_testnet
from ledger import keys
from ledger.tx import Transfer, sign_tx
from storage import StorageError, Store


async def test_a_failed_block_write_stops_start_with_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        restore_process_state: None) -> None:
    net = make_testnet(tmp_path / "net", validators=1, accounts=2)
    alice, bob = (keys.PrivateKey.load(p) for p in net.account_files)

    def disk_full(self: Store, *args: Any, **kwargs: Any) -> Any:
        raise StorageError("write failed: No space left on device")

    monkeypatch.setattr(Store, "save_block", disk_full)
    running = asyncio.create_task(run_node(net.node_homes[0], {"rest_port": 0, "p2p_port": 0, "tick_ms": 10}))
    printed = ""
    deadline = asyncio.get_running_loop().time() + 20
    while "serving" not in printed:
        assert not running.done(), running
        assert asyncio.get_running_loop().time() < deadline, "the node never announced its URL"
        await asyncio.sleep(0.05)
        printed += capsys.readouterr().out
    match = re.search(r"serving (http://\S+)", printed)
    assert match is not None
    tx = sign_tx(alice, net.genesis.chain_id, 0, Transfer(bob.address, "LDG", 1))
    async with aiohttp.ClientSession() as http, http.post(match.group(1) + "/v1/transactions",
                                                          json=tx.to_json()) as resp:
        assert resp.status == 202
    with pytest.raises(CliError, match="the node halted: storage failure: write failed: No space left"):
        await asyncio.wait_for(running, 20)
