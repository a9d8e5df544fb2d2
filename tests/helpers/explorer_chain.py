"""A single-validator node in process (real LevelDB, HTTP on port 0) with a few blocks the explorer
tests look at: transfers, a record whose value is an HTML snippet, and a governance proposal with votes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cli.testnet import make_testnet
from ledger import keys
from ledger.governance import decode_action
from ledger.tx import Payload, Propose, Record, Transaction, Transfer, Vote, sign_tx
from node.api.app import ApiServer, limits_from_config, make_app
from node.node import Node

CHAIN = "ledger-local"
HTML_VALUE = '<img src=x id="pwned" onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
HTML_KEY = "note<b>1</b>"


@dataclass
class Explored:
    node: Node
    url: str
    http: aiohttp.ClientSession
    accounts: list[keys.PrivateKey]
    members: list[keys.PrivateKey]
    nonces: dict[str, int] = field(default_factory=dict)
    transfer: Transaction | None = None
    record: Transaction | None = None
    proposal: Transaction | None = None

    def tx(self, who: keys.PrivateKey, payload: Payload) -> Transaction:
        nonce = self.nonces.get(who.address, 0)
        self.nonces[who.address] = nonce + 1
        return sign_tx(who, CHAIN, nonce, payload)

    async def commit(self, tx: Transaction) -> dict[str, Any]:
        async with self.http.post(self.url + "/v1/transactions?wait=commit", json=tx.to_json()) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
            return body


@asynccontextmanager
async def explored_node(tmp_path: Path, overrides: Mapping[str, Any] | None = None,
                        populate: bool = True) -> AsyncIterator[Explored]:
    net = make_testnet(tmp_path / "net", validators=1, accounts=3, committee=3)
    node = Node.open(net.node_homes[0], {"tick_ms": 10, **(overrides or {})}, environ={})
    await node.start()
    server = ApiServer(make_app(node.service, node.metrics, limits_from_config(node.config)), "127.0.0.1", 0)
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            ex = Explored(node, server.url, http, [keys.PrivateKey.load(p) for p in net.account_files],
                          [keys.PrivateKey.load(p) for p in net.member_files])
            if populate:
                await _populate(ex)
            yield ex
    finally:
        await server.stop()
        await node.stop()


async def _populate(ex: Explored) -> None:
    alice, bob, carol = ex.accounts
    ex.transfer = ex.tx(alice, Transfer(bob.address, "LDG", 25))
    await ex.commit(ex.transfer)
    await ex.commit(ex.tx(bob, Transfer(carol.address, "LDG", 3)))
    ex.record = ex.tx(alice, Record(HTML_KEY, HTML_VALUE))
    await ex.commit(ex.record)
    ex.proposal = ex.tx(ex.members[0], Propose(*decode_action("grant-role", {"account": bob.address,
                                                                              "role": "auditor"})))
    await ex.commit(ex.proposal)
    await ex.commit(ex.tx(ex.members[1], Vote(ex.proposal.hash, True)))
