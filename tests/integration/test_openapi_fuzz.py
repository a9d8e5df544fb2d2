"""Schemathesis against a real node's own GET /openapi.json: the document says exactly what the node
accepts and answers.

A single-validator node runs as a `ledgerd start` process; schemathesis's CLI generates requests from
the document (examples, coverage and fuzzing phases, a bounded number of cases per operation, a fixed
seed) and runs every check, among them not_a_server_error, status_code_conformance,
response_schema_conformance, content_type_conformance, negative_data_rejection and
positive_data_acceptance (a schema-valid request must not be refused as malformed). Any failure fails
this test with schemathesis's report.

Two things no JSON Schema can say, and so are configured rather than documented:
- a schema-valid transaction is still refused by ledger rules (its signature cannot be right, its
  chain id is rarely this chain's): 422 counts as an answer to positive data on POST /v1/transactions;
- two rules tie a query parameter to the rest of a POST /v1/transactions request (schemathesis_hooks.py
  says which); a positive-data refusal for breaking one of them is dropped, not the request;
- GET /v1/events is a WebSocket upgrade, which schemathesis's HTTP client cannot perform; the stream
  is tested with a WebSocket client elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ports import free_base_port, wait_for

BIN_DIR = Path(sys.executable).parent
LEDGERD = [str(BIN_DIR / "ledgerd")] if (BIN_DIR / "ledgerd").exists() else [sys.executable, "-m", "cli"]
SCHEMATHESIS = BIN_DIR / "schemathesis"
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MAX_EXAMPLES = 25
SEED = 20261204
RUN_TIMEOUT_S = 150

CONFIG = """
[[operations]]
include-path = "/v1/transactions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def node_url(tmp_path: Path) -> Iterator[str]:
    base = free_base_port(1)
    subprocess.run([*LEDGERD, "testnet", "--validators", "1", "--out", str(tmp_path / "net"),
                    "--base-port", str(base)], check=True, capture_output=True, timeout=60)
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*LEDGERD, "start", "--home", str(tmp_path / "net" / "node0")],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{base}"
        wait_for(lambda: _get(url + "/healthz") or proc.poll() is not None, 30, "the node's REST API")
        assert proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]


def test_schemathesis_finds_no_failure_against_the_nodes_own_document(node_url: str, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists(), f"{SCHEMATHESIS} is missing: ./scripts/test installs it (the test extra)"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [str(SCHEMATHESIS), "--config-file", str(config), "run", node_url + "/openapi.json",
           "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
           "--phases", "examples,coverage,fuzzing,stateful", "--exclude-path", "/v1/events",
           "--request-timeout", "10", "--no-color", "--report-dir", str(tmp_path / "report")]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-4000:]
