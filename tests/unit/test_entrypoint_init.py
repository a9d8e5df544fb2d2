"""The container entrypoint without a container: the init job's log names only paths that exist once
it is done (never the staging folder it wrote into), and a node tells /v1/status the p2p URL its peers
dial rather than the 0.0.0.0 it binds. Runs the real `ledgerd testnet` into a temporary data folder."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.py"


@pytest.fixture
def entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledgerd_docker_entrypoint", ENTRYPOINT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "DATA", tmp_path)
    # Where the container has it: `ledgerd` on PATH, here the one of this interpreter's environment.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("LEDGERD_HOSTS", "LEDGERD_CHAIN_ID", "LEDGERD_ACCOUNTS", "LEDGERD_P2P_ADVERTISE_URL",
                 "LEDGERD_UID", "LEDGERD_GID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEDGERD_VALIDATORS", "2")
    return module


def test_the_init_log_names_the_final_paths_not_the_staging_folder(
        entrypoint: ModuleType, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert entrypoint.cmd_init() == 0
    out, err = capfd.readouterr()
    log = out + err
    # Only the command line itself names the staging folder; nothing reported after it does.
    running = [i for i, line in enumerate(log.splitlines()) if "running: ledgerd testnet" in line]
    assert running == [0], log
    assert all(entrypoint.STAGING_DIR not in line for line in log.splitlines()[1:]), log
    assert not (tmp_path / entrypoint.STAGING_DIR).exists()
    assert f"{tmp_path}/node0" in log and f"{tmp_path}/accounts" in log, log
    assert f"ledgerd start --home {tmp_path}/nodeK" in log, log
    assert "start a node with:" not in log


def test_a_node_advertises_the_p2p_url_its_peers_list(
        entrypoint: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert entrypoint.cmd_init() == 0
    assert entrypoint._advertise_url(tmp_path / "node0") == "ws://node0:9001"
    assert entrypoint._advertise_url(tmp_path / "node1") == "ws://node1:9002"
    monkeypatch.setenv("LEDGERD_P2P_ADVERTISE_URL", "wss://chosen.example:443")
    assert entrypoint._advertise_url(tmp_path / "node0") is None  # the operator's choice stands
