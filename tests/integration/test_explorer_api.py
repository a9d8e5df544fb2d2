"""The explorer's REST reads and pages in front of a real node: answers match the OpenAPI document,
pages join up, bad queries are JSON 400s, the pages carry a strict CSP, and a setting turns the
explorer off (the REST reads stay)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator

from node.api.explorer.site import CONTENT_SECURITY_POLICY
from tests.helpers.explorer_chain import HTML_KEY, HTML_VALUE, Explored, explored_node

pytestmark = pytest.mark.timeout(60)


async def get(ex: Explored, path: str, template: str | None = None) -> tuple[int, Any]:
    async with ex.http.get(ex.url + path, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text[:300])
        body = json.loads(text)
        if template is not None:
            async with ex.http.get(ex.url + "/openapi.json") as doc_resp:
                doc = await doc_resp.json()
            response = doc["paths"][template]["get"]["responses"][str(resp.status)]
            schema = response["content"]["application/json"]["schema"]
            OAS31Validator({**schema, "components": doc["components"]}).validate(body)
        return resp.status, body


async def test_index_reads_answer_as_documented_and_paginate(tmp_path: Path) -> None:
    async with explored_node(tmp_path) as ex:
        assert ex.transfer is not None and ex.record is not None and ex.proposal is not None
        alice, bob, _ = ex.accounts
        head = ex.node.store.tip.height
        assert head >= 5

        status, page = await get(ex, "/v1/blocks?limit=2", "/v1/blocks")
        assert status == 200 and [b["height"] for b in page["blocks"]] == [head, head - 1]
        heights = [b["height"] for b in page["blocks"]]
        while page["next_before"] is not None:
            status, page = await get(ex, f"/v1/blocks?limit=2&before={page['next_before']}", "/v1/blocks")
            heights += [b["height"] for b in page["blocks"]]
        assert heights == list(range(head, 0, -1))
        validator = ex.node.node_id
        status, page = await get(ex, "/v1/blocks?limit=1", "/v1/blocks")
        assert page["blocks"][0]["signers"] == [validator] and page["blocks"][0]["proposer"] == validator

        block_hash = page["blocks"][0]["hash"]
        status, block = await get(ex, f"/v1/blocks/by-hash/{block_hash.upper()}", "/v1/blocks/by-hash/{hash}")
        assert status == 200 and block["height"] == head and block["hash"] == block_hash
        status, body = await get(ex, "/v1/blocks/by-hash/" + "0" * 64, "/v1/blocks/by-hash/{hash}")
        assert status == 404 and body["error"]["code"] == "block_not_found"

        # bob received the transfer, sent one, and is named by the proposal: newest first.
        status, txs = await get(ex, f"/v1/accounts/{bob.address}/transactions", "/v1/accounts/{address}/transactions")
        listed = [t["hash"] for t in txs["transactions"]]
        assert listed[0] == ex.proposal.hash and listed[-1] == ex.transfer.hash and len(listed) == 3
        assert txs["next_after"] is None
        status, first = await get(ex, f"/v1/accounts/{bob.address}/transactions?limit=2")
        status, rest = await get(ex, f"/v1/accounts/{bob.address}/transactions?limit=2&after={first['next_after']}")
        assert [t["hash"] for t in first["transactions"] + rest["transactions"]] == listed
        # A cursor beyond any storable height or index is "from the newest" (found by the fuzzer).
        status, beyond = await get(ex, f"/v1/accounts/{bob.address}/transactions?after=9999999999999999999-9999999999")
        assert status == 200 and [t["hash"] for t in beyond["transactions"]] == listed

        status, records = await get(ex, f"/v1/accounts/{alice.address}/records", "/v1/accounts/{address}/records")
        assert [(r["key"], r["value"]) for r in records["records"]] == [(HTML_KEY, HTML_VALUE)]

        for q, want in ((ex.transfer.hash, {"kind": "tx", "hash": ex.transfer.hash}),
                        ("1", {"kind": "block", "height": 1}),
                        (block_hash, {"kind": "block", "height": head, "hash": block_hash}),
                        (alice.address.upper(), {"kind": "account", "address": alice.address})):
            status, found = await get(ex, f"/v1/search?q={q}", "/v1/search")
            assert (status, found) == (200, want)
        status, found = await get(ex, "/v1/search?q=99999", "/v1/search")
        assert found["kind"] == "none" and "99999" in found["message"]


@pytest.mark.parametrize("path", [
    "/v1/blocks?limit=0", "/v1/blocks?limit=51", "/v1/blocks?before=0", "/v1/blocks?before=x", "/v1/blocks?page=2",
    "/v1/blocks/by-hash/xyz", "/v1/accounts/zz/transactions", "/v1/accounts/" + "a" * 64 + "/transactions?after=5",
    "/v1/accounts/" + "a" * 64 + "/transactions?limit=101", "/v1/accounts/" + "a" * 64 + "/records?after=" + "k" * 129,
    "/v1/search", "/v1/search?q=" + "1" * 201, "/v1/search?q=1&q=2",
])
async def test_bad_index_queries_are_json_400(tmp_path: Path, path: str) -> None:
    async with explored_node(tmp_path, populate=False) as ex:
        status, body = await get(ex, path)
        assert status == 400 and body["error"]["code"] in ("invalid_query", "invalid_hash", "invalid_address")


async def test_pages_are_served_with_a_strict_csp_and_deep_links(tmp_path: Path) -> None:
    async with explored_node(tmp_path, populate=False) as ex:
        async with ex.http.get(ex.url + "/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/explorer/"
        for path in ("/explorer/", "/explorer/tx/" + "ab" * 32, "/explorer/block/3", "/explorer/account/" + "c" * 64,
                     "/explorer/record/" + "c" * 64 + "/a%2Fb%3Cc", "/explorer/governance"):
            async with ex.http.get(ex.url + path) as resp:
                html = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html", path
                assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert '<script src="/explorer/static/app.js" defer></script>' in html
                assert "<script>" not in html  # nothing inline: the CSP would refuse it
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            async with ex.http.get(ex.url + "/explorer/static/" + name) as resp:
                assert resp.status == 200 and resp.content_type == kind
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with ex.http.get(ex.url + "/explorer/static/../../app.py") as resp:
            assert resp.status == 404
        async with ex.http.delete(ex.url + "/") as resp:
            assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
        # The script writes chain values only as text.
        async with ex.http.get(ex.url + "/explorer/static/app.js") as resp:
            script = await resp.text()
        assert "innerHTML" not in script.replace("never through innerHTML", "")
        assert "insertAdjacentHTML" not in script and "document.write" not in script


async def test_the_explorer_can_be_turned_off(tmp_path: Path) -> None:
    async with explored_node(tmp_path, {"explorer_enabled": False}, populate=False) as ex:
        for path in ("/", "/explorer/", "/explorer/static/app.js"):
            status, body = await get(ex, path)
            assert status == 404 and body["error"]["code"] == "not_found"
        status, page = await get(ex, "/v1/blocks")
        assert status == 200 and page == {"blocks": [], "next_before": None}
