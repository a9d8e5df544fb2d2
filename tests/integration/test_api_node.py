"""The REST API in front of a real node (single-validator PBFT, real LevelDB, real mempool), over HTTP
on port 0: every bad input the contract names is refused with its status and code, changes nothing
and leaves the node serving; the happy paths answer what the OpenAPI document says they answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator

from cli.proof import certificate_signers
from cli.testnet import make_testnet
from ledger import keys
from ledger.proof import verify_bundle
from ledger.tx import Issue, Payload, Record, Transaction, Transfer, sign_tx
from node.api.app import ApiServer, limits_from_config, make_app
from node.node import Node

CHAIN = "ledger-local"
WAIT_S = 10.0


@dataclass
class Cluster:
    node: Node
    server: ApiServer
    http: aiohttp.ClientSession
    accounts: list[keys.PrivateKey]
    doc: dict[str, Any]

    @property
    def url(self) -> str:
        return self.server.url


async def _serve(home: Path, overrides: dict[str, Any],
                 accounts: list[keys.PrivateKey]) -> AsyncIterator[Cluster]:
    node = Node.open(home, overrides, environ={})
    await node.start()
    server = ApiServer(make_app(node.service, node.metrics, limits_from_config(node.config)), "127.0.0.1", 0)
    try:
        await server.start()
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/openapi.json") as resp:
                doc = await resp.json()
            yield Cluster(node, server, http, accounts, doc)
    finally:
        await server.stop()
        await node.stop()


@pytest.fixture
async def c(tmp_path: Path) -> AsyncIterator[Cluster]:
    net = make_testnet(tmp_path / "net", validators=1, accounts=3)
    accounts = [keys.PrivateKey.load(p) for p in net.account_files]
    async for cluster in _serve(net.node_homes[0], {"tick_ms": 10}, accounts):
        yield cluster


@pytest.fixture
async def stalled(tmp_path: Path) -> AsyncIterator[Cluster]:
    """node0 of a 4-validator chain, alone: it admits transactions but can never commit them."""
    net = make_testnet(tmp_path / "net4", validators=4, accounts=3)
    accounts = [keys.PrivateKey.load(p) for p in net.account_files]
    async for cluster in _serve(net.node_homes[0], {"tick_ms": 10, "mempool_max_txs": 2, "p2p_port": 0}, accounts):
        yield cluster


def tx(sender: keys.PrivateKey, nonce: int, payload: Payload, chain: str = CHAIN) -> Transaction:
    return sign_tx(sender, chain, nonce, payload)


def pay(c: Cluster, nonce: int = 0, amount: int = 10, sender: int = 0, to: int = 1) -> Transaction:
    return tx(c.accounts[sender], nonce, Transfer(c.accounts[to].address, "LDG", amount))


async def poll_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll a condition the node exposes no event for, up to a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --- checking answers against the OpenAPI document ----------------------------------------------


def documented_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    # Resolve "#/components/..." references against the document itself.
    return {**schema, "components": doc["components"]}


async def call(c: Cluster, method: str, path: str, template: str | None = None,
               **kwargs: Any) -> tuple[int, Any]:
    """Send a request; check the answer is JSON and matches the documented schema for its status."""
    async with c.http.request(method, c.url + path, **kwargs) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text[:300])
        body = json.loads(text)
        if template is not None:
            OAS31Validator(documented_schema(c.doc, template, method, resp.status)).validate(body)
        if resp.status in (429, 503):
            assert int(resp.headers["Retry-After"]) >= 1
        return resp.status, body


async def submit(c: Cluster, body: Any, query: str = "") -> tuple[int, Any]:
    return await call(c, "POST", "/v1/transactions" + query, "/v1/transactions", json=body)


async def commit(c: Cluster, *txs: Transaction) -> None:
    for t in txs:
        status, body = await submit(c, t.to_json(), "?wait=commit")
        assert (status, body["status"]) == (200, "committed"), body


async def snapshot(c: Cluster) -> dict[str, Any]:
    _, status = await call(c, "GET", "/v1/status", "/v1/status")
    accounts = []
    for k in c.accounts:
        _, account = await call(c, "GET", f"/v1/accounts/{k.address}", "/v1/accounts/{address}")
        accounts.append(account)
    return {"height": status["height"], "latest_hash": status["latest_hash"], "app_hash": status["app_hash"],
            "mempool": status["mempool_size"], "accounts": accounts}


# --- every refusal: right status and code, nothing changes, the node keeps serving ---------------


def mutate(t: Transaction, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj = t.to_json()
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


def bad_signature(t: Transaction) -> dict[str, Any]:
    sig = bytearray(t.signature)
    sig[0] ^= 1
    return mutate(t, ("signature",), sig.hex())


REFUSALS: list[tuple[str, Any, int, str]] = [
    # (name, how to build the body from the cluster, status, code)
    ("unknown top-level field", lambda c: {**pay(c).to_json(), "extra": 1}, 400, "malformed"),
    ("unknown body field", lambda c: mutate(pay(c), ("body", "memo"), "hi"), 400, "malformed"),
    ("unknown payload field", lambda c: mutate(pay(c), ("body", "payload", "fee"), 1), 400, "malformed"),
    ("missing signature", lambda c: {"body": pay(c).to_json()["body"]}, 400, "malformed"),
    ("nonce is a string", lambda c: mutate(pay(c), ("body", "nonce"), "0"), 400, "malformed"),
    ("sender is not hex", lambda c: mutate(pay(c), ("body", "sender"), "z" * 64), 400, "malformed"),
    ("type is unknown", lambda c: mutate(pay(c), ("body", "type"), "mint"), 400, "malformed"),
    ("signature is short", lambda c: mutate(pay(c), ("signature",), "ab" * 10), 400, "malformed"),
    ("a JSON string", lambda c: "transfer", 400, "malformed"),
    ("empty array", lambda c: [], 400, "empty_batch"),
    ("amount 0", lambda c: pay(c, amount=0).to_json(), 422, "invalid_amount"),
    ("amount negative", lambda c: pay(c, amount=-5).to_json(), 422, "invalid_amount"),
    ("amount 2^53", lambda c: pay(c, amount=2**53).to_json(), 422, "invalid_amount"),
    ("amount float", lambda c: mutate(pay(c), ("body", "payload", "amount"), 10.0), 422, "invalid_amount"),
    ("amount string", lambda c: mutate(pay(c), ("body", "payload", "amount"), "10"), 422, "invalid_amount"),
    ("amount boolean", lambda c: mutate(pay(c), ("body", "payload", "amount"), True), 422, "invalid_amount"),
    ("bad signature", lambda c: bad_signature(pay(c)), 422, "invalid_signature"),
    ("signature of another body", lambda c: mutate(pay(c), ("body", "payload", "amount"), 11), 422,
     "invalid_signature"),
    ("wrong chain_id", lambda c: tx(c.accounts[0], 0, Transfer(c.accounts[1].address, "LDG", 1),
                                    "other-chain").to_json(), 422, "wrong_chain_id"),
    ("unknown asset", lambda c: tx(c.accounts[0], 0, Transfer(c.accounts[1].address, "NOPE", 1)).to_json(),
     422, "unknown_asset"),
    ("invalid asset symbol", lambda c: mutate(pay(c), ("body", "payload", "asset"), "ldg"), 422,
     "invalid_asset"),
    ("insufficient funds", lambda c: pay(c, amount=2**52).to_json(), 422, "insufficient_funds"),
    ("issue of the native asset", lambda c: tx(c.accounts[0], 0, Issue("LDG", 5)).to_json(), 422,
     "asset_exists"),
    ("record value over 4096 bytes", lambda c: tx(c.accounts[0], 0, Record("doc", "v" * 4097)).to_json(),
     422, "record_too_large"),
    ("record key over 128 bytes", lambda c: tx(c.accounts[0], 0, Record("k" * 129, "v")).to_json(),
     422, "record_too_large"),
    ("nonce far ahead", lambda c: pay(c, nonce=10_000).to_json(), 422, "nonce_too_far"),
]


@pytest.mark.parametrize(("name", "build", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refusal_changes_nothing(c: Cluster, name: str, build: Any, status: int, code: str) -> None:
    before = await snapshot(c)
    got_status, body = await submit(c, build(c))
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert "Traceback" not in json.dumps(body)
    assert await snapshot(c) == before
    # Still serving, and still accepting good transactions.
    await commit(c, pay(c))


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff", b'{"body": 1, "body": 2}', b"[" * 5000 + b"]" * 5000])
async def test_bodies_that_are_not_json(c: Cluster, raw: bytes) -> None:
    before = await snapshot(c)
    status, body = await submit_raw(c, raw)
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert await snapshot(c) == before


async def submit_raw(c: Cluster, raw: bytes) -> tuple[int, Any]:
    return await call(c, "POST", "/v1/transactions", "/v1/transactions", data=raw,
                      headers={"Content-Type": "application/json"})


async def test_two_mib_body_is_413(c: Cluster) -> None:
    before = await snapshot(c)
    status, body = await submit_raw(c, b'{"pad": "' + b"x" * (2 << 20) + b'"}')
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    assert await snapshot(c) == before
    await commit(c, pay(c))


async def test_batch_over_the_limit_is_413(c: Cluster) -> None:
    limit = c.node.config.max_batch_txs
    status, body = await submit(c, [pay(c, nonce=n).to_json() for n in range(limit + 1)])
    assert (status, body["error"]["code"]) == (413, "batch_too_large")
    assert len(c.node.mempool) == 0


async def test_reused_nonce_and_replay_are_409(c: Cluster) -> None:
    first = pay(c, nonce=0, amount=10)
    await commit(c, first)
    before = await snapshot(c)
    status, body = await submit(c, first.to_json())
    assert (status, body["error"]["code"]) == (409, "duplicate"), body
    status, body = await submit(c, pay(c, nonce=0, amount=11).to_json(), "?wait=commit")
    assert (status, body["error"]["code"]) == (409, "nonce_used"), body
    status, body = await submit(c, pay(c, nonce=0, amount=11).to_json())
    assert (status, body["error"]["code"]) == (409, "nonce_used"), body
    assert await snapshot(c) == before


async def test_reissue_of_an_existing_asset_is_422(c: Cluster) -> None:
    await commit(c, tx(c.accounts[0], 0, Issue("GOLD", 100)))
    before = await snapshot(c)
    for sender, nonce in ((0, 1), (1, 0)):
        status, body = await submit(c, tx(c.accounts[sender], nonce, Issue("GOLD", 5)).to_json())
        assert (status, body["error"]["code"]) == (422, "asset_exists"), body
    assert await snapshot(c) == before


async def test_bad_reads_are_json_4xx(c: Cluster) -> None:
    cases = [
        ("/v1/transactions/" + "0" * 64, "/v1/transactions/{hash}", 404, "tx_not_found"),
        ("/v1/transactions/nothex", "/v1/transactions/{hash}", 400, "invalid_hash"),
        ("/v1/blocks/999", "/v1/blocks/{height}", 404, "block_not_found"),
        ("/v1/blocks/0", "/v1/blocks/{height}", 404, "block_not_found"),
        ("/v1/blocks/abc", "/v1/blocks/{height}", 400, "invalid_height"),
        ("/v1/accounts/0x12", "/v1/accounts/{address}", 400, "invalid_address"),
        (f"/v1/records/{c.accounts[0].address}/none", "/v1/records/{owner}/{key}", 404, "record_not_found"),
        ("/v1/nothing", None, 404, "not_found"),
        ("/nothing", None, 404, "not_found"),  # "/" itself redirects to the explorer
        ("/explorer/nothing", None, 404, "not_found"),
    ]
    for path, template, status, code in cases:
        got, body = await call(c, "GET", path, template)
        assert (got, body["error"]["code"]) == (status, code), (path, body)
    got, body = await call(c, "DELETE", "/v1/status")
    assert (got, body["error"]["code"]) == (405, "method_not_allowed")


# --- happy paths -------------------------------------------------------------------------------


async def test_transfer_then_every_read_shows_it(c: Cluster) -> None:
    alice, bob = c.accounts[0], c.accounts[1]
    _, bob_before = await call(c, "GET", f"/v1/accounts/{bob.address}", "/v1/accounts/{address}")
    t = pay(c, amount=25)
    status, body = await submit(c, t.to_json())
    assert (status, body) == (202, {"hash": t.hash, "status": "pending"})
    status, body = await submit(c, t.to_json())  # already pending: a duplicate
    assert (status, body["error"]["code"]) == (409, "duplicate")
    # Retrying with wait=commit is safe: it waits for the copy already known.
    status, body = await submit(c, t.to_json(), "?wait=commit")
    assert (status, body["status"]) == (200, "committed")
    result = await c.node.service.wait_committed(t.hash, WAIT_S)
    assert result is not None and result.status == "committed"
    status, body = await submit(c, t.to_json(), "?wait=commit")
    assert (status, body) == (200, result.to_json())
    status, body = await call(c, "GET", f"/v1/transactions/{t.hash}", "/v1/transactions/{hash}")
    assert body == {"hash": t.hash, "status": "committed", "height": result.height, "index": 0,
                    "result": {"code": "ok"}}
    _, bob_after = await call(c, "GET", f"/v1/accounts/{bob.address}", "/v1/accounts/{address}")
    assert bob_after["balances"]["LDG"] == bob_before["balances"]["LDG"] + 25
    _, alice_after = await call(c, "GET", f"/v1/accounts/{alice.address}", "/v1/accounts/{address}")
    assert alice_after["nonce"] == 1
    _, latest = await call(c, "GET", "/v1/blocks/latest", "/v1/blocks/latest")
    _, by_height = await call(c, "GET", f"/v1/blocks/{result.height}", "/v1/blocks/{height}")
    assert latest == by_height
    assert latest["txs"] == [t.to_json()] and latest["header"]["height"] == result.height
    _, status_body = await call(c, "GET", "/v1/status", "/v1/status")
    assert status_body["height"] == result.height and status_body["latest_hash"] == latest["hash"]
    _, fresh = await call(c, "GET", "/v1/accounts/" + "ef" * 32, "/v1/accounts/{address}")
    assert fresh == {"address": "ef" * 32, "nonce": 0, "balances": {}, "roles": [], "frozen": False,
                     "allowed": False}


async def test_issue_and_record_with_wait_commit(c: Cluster) -> None:
    owner = c.accounts[2]
    status, body = await submit(c, tx(owner, 0, Issue("GOLD", 1000)).to_json(), "?wait=commit")
    assert (status, body["status"], body["result"]) == (200, "committed", {"code": "ok"})
    record = tx(owner, 1, Record("invoice/42", "sha256:9f86d081"))
    status, body = await submit(c, record.to_json(), "?wait=commit&timeout_s=5")
    assert (status, body["status"]) == (200, "committed")
    path = f"/v1/records/{owner.address}/invoice%2F42"
    status, body = await call(c, "GET", path, "/v1/records/{owner}/{key}")
    assert status == 200
    assert body == {"owner": owner.address, "key": "invoice/42", "value": "sha256:9f86d081",
                    "height": body["height"], "tx": record.hash}
    _, account = await call(c, "GET", f"/v1/accounts/{owner.address}", "/v1/accounts/{address}")
    assert account["balances"]["GOLD"] == 1000 and account["nonce"] == 2


async def test_batch_answers_per_entry_and_commits_the_accepted(c: Cluster) -> None:
    good = [pay(c, nonce=n, amount=1) for n in range(3)]
    bad = pay(c, nonce=0, amount=0, sender=1)
    status, body = await submit(c, [t.to_json() for t in good] + [bad.to_json()])
    assert status == 202
    assert body[:3] == [{"hash": t.hash, "status": "pending"} for t in good]
    assert body[3]["status"] == "rejected" and body[3]["error"]["code"] == "invalid_amount"
    for t in good:
        assert (await c.node.service.wait_committed(t.hash, WAIT_S)) is not None
    _, account = await call(c, "GET", f"/v1/accounts/{c.accounts[0].address}", "/v1/accounts/{address}")
    assert account["nonce"] == 3


async def test_event_stream_replays_follows_and_resumes(c: Cluster) -> None:
    await commit(c, pay(c, nonce=0), pay(c, nonce=1))
    head = c.node.height
    async with c.http.ws_connect(c.url + "/v1/events?from_height=1") as ws:
        replayed = [await ws.receive_json(timeout=WAIT_S) for _ in range(head)]
        assert [e["height"] for e in replayed] == list(range(1, head + 1))
        assert all(e["type"] == "block" for e in replayed)
        live_tx = pay(c, nonce=2)
        await commit(c, live_tx)
        live = await ws.receive_json(timeout=WAIT_S)
        assert live["height"] == head + 1
        assert [(t["hash"], t["status"], t["result"]) for t in live["txs"]] == [(live_tx.hash, "committed",
                                                                                 {"code": "ok"})]
    async with c.http.ws_connect(c.url + f"/v1/events?from_height={head}") as ws:
        resumed = [await ws.receive_json(timeout=WAIT_S) for _ in range(2)]
    assert [e["height"] for e in resumed] == [head, head + 1]
    assert resumed[1] == live


async def test_metrics_show_height_and_request_latency(c: Cluster) -> None:
    await commit(c, pay(c))
    async with c.http.get(c.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert f"ledgerd_height {float(c.node.height)}" in text
    labels = 'method="POST",route="/v1/transactions",status="200"'
    assert "ledgerd_http_request_duration_seconds_count{" + labels + "}" in text


async def test_healthz_and_openapi(c: Cluster) -> None:
    status, body = await call(c, "GET", "/healthz", "/healthz")
    assert body == {"status": "ok", "node_id": c.node.node_id, "chain_id": CHAIN}
    assert c.doc["openapi"].startswith("3.")


# --- a node that cannot commit: timeouts and a full mempool ---------------------------------------


async def test_wait_commit_times_out_with_504_and_the_tx_stays_pending(stalled: Cluster) -> None:
    c = stalled
    t = pay(c)
    status, body = await submit(c, t.to_json(), "?wait=commit&timeout_s=0.3")
    assert (status, body["error"]["code"], body["hash"]) == (504, "commit_timeout", t.hash)
    status, body = await call(c, "GET", f"/v1/transactions/{t.hash}", "/v1/transactions/{hash}")
    assert (status, body["status"], body["height"]) == (200, "pending", None)


async def test_full_mempool_is_503_with_retry_after(stalled: Cluster) -> None:
    c = stalled
    for sender in (0, 1):
        status, _ = await submit(c, pay(c, sender=sender, to=2).to_json())
        assert status == 202
    status, body = await submit(c, pay(c, sender=2, to=0).to_json())
    assert (status, body["error"]["code"]) == (503, "mempool_full")
    status, body = await submit(c, [pay(c, sender=2, to=0).to_json()])
    assert (status, body["error"]["code"]) == (503, "mempool_full")
    assert body["results"][0]["error"]["code"] == "mempool_full"


async def test_node_stop_ends_a_pending_wait_with_504(stalled: Cluster) -> None:
    c = stalled
    t = pay(c)
    waiting = asyncio.create_task(submit(c, t.to_json(), "?wait=commit"))
    # Admitted, and now waiting for a commit that cannot come.
    assert await poll_until(lambda: c.node.service.tx_status(t.hash) is not None, WAIT_S)
    await c.node.stop()
    status, body = await asyncio.wait_for(waiting, WAIT_S)
    assert (status, body["error"]["code"], body["hash"]) == (504, "commit_timeout", t.hash)


async def test_server_stop_closes_event_streams_with_going_away(stalled: Cluster) -> None:
    c = stalled
    async with c.http.ws_connect(c.url + "/v1/events") as ws:
        await c.server.stop()
        msg = await ws.receive(timeout=WAIT_S)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)


async def test_proof_routes_answer_bundles_that_verify_and_documented_errors(c: Cluster) -> None:
    t = pay(c)
    await commit(c, t)
    status, bundle = await call(c, "GET", f"/v1/transactions/{t.hash}/proof", "/v1/transactions/{hash}/proof")
    assert status == 200
    summary = verify_bundle(bundle, c.node.genesis, certificate_signers)
    assert summary["tx"] == t.hash and summary["result"] == {"code": "ok"}
    status, header = await call(c, "GET", f"/v1/blocks/{summary['height']}/proof", "/v1/blocks/{height}/proof")
    assert status == 200 and verify_bundle(header, c.node.genesis, certificate_signers)["kind"] == "header"
    for path, template, expected in [
        (f"/v1/transactions/{'ab' * 32}/proof", "/v1/transactions/{hash}/proof", (404, "tx_not_found")),
        ("/v1/transactions/xyz/proof", "/v1/transactions/{hash}/proof", (400, "invalid_hash")),
        ("/v1/blocks/99/proof", "/v1/blocks/{height}/proof", (404, "block_not_found")),
        ("/v1/blocks/0/proof", "/v1/blocks/{height}/proof", (404, "block_not_found")),
        ("/v1/blocks/-1/proof", "/v1/blocks/{height}/proof", (400, "invalid_height")),
    ]:
        status, body = await call(c, "GET", path, template)
        assert (status, body["error"]["code"]) == expected, path


async def test_a_pending_transaction_has_no_proof_yet(stalled: Cluster) -> None:
    t = pay(stalled)
    status, _ = await submit(stalled, t.to_json())
    assert status == 202
    status, body = await call(stalled, "GET", f"/v1/transactions/{t.hash}/proof", "/v1/transactions/{hash}/proof")
    assert (status, body["error"]["code"]) == (404, "tx_not_found")
