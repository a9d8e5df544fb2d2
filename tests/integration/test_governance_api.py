"""The governance REST routes, account fields and block events in front of a real single-validator
node (in process, real LevelDB, HTTP on port 0): answers match the OpenAPI document, bad queries
are JSON 4xx, governance events appear in live and replayed streams alike, and a chain without a
committee says governance is disabled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator

from cli.testnet import make_testnet
from ledger import keys
from ledger.governance import decode_action
from ledger.tx import Payload, Propose, Transaction, Transfer, Vote, sign_tx
from node.api.app import ApiServer, limits_from_config, make_app
from node.node import Node

CHAIN = "ledger-local"
WAIT_S = 10.0
pytestmark = pytest.mark.timeout(60)


@dataclass
class One:
    node: Node
    url: str
    http: aiohttp.ClientSession
    accounts: list[keys.PrivateKey]
    members: list[keys.PrivateKey]
    doc: dict[str, Any]
    nonces: dict[str, int]

    def tx(self, who: keys.PrivateKey, payload: Payload) -> Transaction:
        nonce = self.nonces.get(who.address, 0)
        self.nonces[who.address] = nonce + 1
        return sign_tx(who, CHAIN, nonce, payload)


async def _serve(tmp_path: Path, committee: int) -> AsyncIterator[One]:
    net = make_testnet(tmp_path / "net", validators=1, accounts=2, committee=committee)
    node = Node.open(net.node_homes[0], {"tick_ms": 10}, environ={})
    await node.start()
    server = ApiServer(make_app(node.service, node.metrics, limits_from_config(node.config)), "127.0.0.1", 0)
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/openapi.json") as resp:
                doc = await resp.json()
            yield One(node, server.url, http, [keys.PrivateKey.load(p) for p in net.account_files],
                      [keys.PrivateKey.load(p) for p in net.member_files], doc, {})
    finally:
        await server.stop()
        await node.stop()


@pytest.fixture
async def c(tmp_path: Path) -> AsyncIterator[One]:
    async for one in _serve(tmp_path, committee=3):
        yield one


@pytest.fixture
async def ungoverned(tmp_path: Path) -> AsyncIterator[One]:
    async for one in _serve(tmp_path, committee=0):
        yield one


async def call(c: One, method: str, path: str, template: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    async with c.http.request(method, c.url + path, **kwargs) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text[:300])
        body = json.loads(text)
        if template is not None:
            response = c.doc["paths"][template][method.lower()]["responses"][str(resp.status)]
            schema = response["content"]["application/json"]["schema"]
            OAS31Validator({**schema, "components": c.doc["components"]}).validate(body)
        return resp.status, body


async def submit(c: One, t: Transaction, wait: bool = True) -> tuple[int, Any]:
    return await call(c, "POST", "/v1/transactions" + ("?wait=commit" if wait else ""), "/v1/transactions",
                      json=t.to_json())


def propose(action: str, **args: Any) -> Propose:
    return Propose(*decode_action(action, args))


async def test_a_freeze_through_rest_shows_in_routes_accounts_and_events(c: One) -> None:
    thief = c.accounts[1]
    prop = c.tx(c.members[0], propose("freeze-account", account=thief.address))
    status, body = await submit(c, prop)
    assert (status, body["status"]) == (200, "committed")
    status, listed = await call(c, "GET", "/v1/governance/proposals?status=open", "/v1/governance/proposals")
    assert status == 200 and [p["id"] for p in listed["proposals"]] == [prop.hash]
    status, body = await submit(c, c.tx(c.members[2], Vote(prop.hash, True)))
    height = body["height"]
    status, view = await call(c, "GET", f"/v1/governance/proposals/{prop.hash}", "/v1/governance/proposals/{id}")
    assert status == 200 and view["status"] == "executed" and view["executed_height"] == height
    status, account = await call(c, "GET", f"/v1/accounts/{thief.address}", "/v1/accounts/{address}")
    assert (account["frozen"], account["roles"], account["allowed"]) == (True, [], False)
    status, overview = await call(c, "GET", "/v1/governance", "/v1/governance")
    assert overview["enabled"] is True and overview["open_proposals"] == []
    assert [m["address"] for m in overview["committee"]["members"]] == sorted(m.address for m in c.members)
    status, body = await submit(c, c.tx(thief, Transfer(c.accounts[0].address, "LDG", 1)), wait=False)
    assert (status, body["error"]["code"]) == (403, "account_frozen")
    # The block event of the vote carries the outcome, replayed and live alike.
    async with c.http.ws_connect(c.url + f"/v1/events?from_height={height}") as ws:
        replayed = await ws.receive_json(timeout=WAIT_S)
        assert replayed["governance"] == [{"proposal": prop.hash, "action": "freeze-account", "status": "executed"}]
        unfreeze = c.tx(c.members[1], propose("unfreeze-account", account=thief.address))
        await submit(c, unfreeze)
        assert (await ws.receive_json(timeout=WAIT_S))["governance"] == []
        await submit(c, c.tx(c.members[0], Vote(unfreeze.hash, True)))
        live = await ws.receive_json(timeout=WAIT_S)
        assert live["governance"] == [{"proposal": unfreeze.hash, "action": "unfreeze-account", "status": "executed"}]


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/v1/governance/proposals?status=done", 400, "invalid_query"),
    ("/v1/governance/proposals?limit=0", 400, "invalid_query"),
    ("/v1/governance/proposals?limit=abc", 400, "invalid_query"),
    ("/v1/governance/proposals?page=2", 400, "invalid_query"),
    ("/v1/governance?x=1", 400, "invalid_query"),
    ("/v1/governance/proposals/xyz", 400, "invalid_hash"),
    ("/v1/governance/proposals/" + "ab" * 32, 404, "unknown_proposal"),
])
async def test_bad_governance_reads_are_json_4xx(c: One, path: str, status: int, code: str) -> None:
    got, body = await call(c, "GET", path)
    assert (got, body["error"]["code"]) == (status, code)


async def test_governance_refusals_have_their_http_statuses(c: One) -> None:
    obj = c.tx(c.members[0], propose("freeze-account", account=c.accounts[0].address)).to_json()
    obj["body"]["payload"]["args"]["account"] = "nope"
    status, body = await call(c, "POST", "/v1/transactions", "/v1/transactions", json=obj)
    assert (status, body["error"]["code"]) == (422, "invalid_proposal")
    status, body = await submit(c, c.tx(c.accounts[0], propose("freeze-account", account=c.accounts[1].address)),
                                wait=False)
    assert (status, body["error"]["code"]) == (403, "not_a_member")
    c.nonces.clear()  # nothing above was admitted
    status, body = await submit(c, c.tx(c.members[0], propose("remove-member", account=c.accounts[1].address)),
                                wait=False)
    assert (status, body["error"]["code"]) == (422, "invalid_proposal")
    assert "not a member" in body["error"]["message"]


async def test_a_chain_without_a_committee_reports_governance_disabled(ungoverned: One) -> None:
    c = ungoverned
    status, overview = await call(c, "GET", "/v1/governance", "/v1/governance")
    assert status == 200 and overview["enabled"] is False and overview["committee"] is None
    status, body = await submit(c, c.tx(c.accounts[0], propose("freeze-account", account=c.accounts[1].address)),
                                wait=False)
    assert (status, body["error"]["code"]) == (403, "not_a_member") and "disabled" in body["error"]["message"]
    c.nonces.clear()  # the proposal was not admitted
    status, body = await submit(c, c.tx(c.accounts[0], Transfer(c.accounts[1].address, "LDG", 1)))
    assert body["status"] == "committed"
    status, listed = await call(c, "GET", "/v1/governance/proposals", "/v1/governance/proposals")
    assert listed == {"proposals": []}
