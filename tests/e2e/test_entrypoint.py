"""The image's entrypoint on its own (docker run, no compose): the init job writes a testnet once,
owned by the data folder's owner, and refuses a half-written folder; a node waits for init only
up to its deadline; anything else runs as given."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cluster import run

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]


def docker_run(image: str, *args: str, data: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["docker", "run", "--rm"]
    if data is not None:
        argv += ["--volume", f"{data}:/data"]
    for name, value in (env or {}).items():
        argv += ["--env", f"{name}={value}"]
    return run([*argv, image, *args], timeout_s=120, check=False)


def test_init_writes_the_testnet_once_owned_by_the_data_folder_owner(image: str, tmp_path: Path) -> None:
    owner = os.geteuid()
    if owner == 0:
        owner = 4321  # as root we can hand the folder to someone else and see the files follow
        os.chown(tmp_path, owner, owner)

    new_net = {"LEDGERD_CONSENSUS": "raft", "LEDGERD_ACCOUNTS": "2"}
    first = docker_run(image, "init", data=tmp_path, env=new_net)
    assert first.returncode == 0, first.stderr
    assert {p.stat().st_uid for p in tmp_path.rglob("*")} == {owner}
    assert len(json.loads((tmp_path / "accounts" / "index.json").read_text())) == 2
    assert json.loads((tmp_path / "node3" / "genesis.json").read_text())["consensus"] == "raft"
    assert not (tmp_path / ".init-staging").exists()

    key = (tmp_path / "accounts" / "account0.pem").read_bytes()
    second = docker_run(image, "init", data=tmp_path, env={"LEDGERD_CONSENSUS": "pbft"})
    assert second.returncode == 0, second.stderr
    assert "already exists" in second.stderr and "applies only to a new testnet" in second.stderr
    assert (tmp_path / "accounts" / "account0.pem").read_bytes() == key


def test_init_refuses_a_half_written_data_folder_and_changes_nothing(image: str, tmp_path: Path) -> None:
    (tmp_path / "node0").mkdir()
    result = docker_run(image, "init", data=tmp_path)
    assert result.returncode == 1
    assert "holds part of a testnet" in result.stderr, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["node0"]


def test_a_node_gives_up_clearly_when_init_never_finishes(image: str, tmp_path: Path) -> None:
    result = docker_run(image, "node", "node0", data=tmp_path, env={"LEDGERD_INIT_TIMEOUT_S": "1"})
    assert result.returncode == 1
    assert "not ready after 1 s" in result.stderr and "logs init" in result.stderr, result.stderr


def test_other_commands_run_as_given(image: str) -> None:
    result = docker_run(image, "ledgerd", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ledgerd ")
    missing = docker_run(image, "no-such-command")
    assert missing.returncode == 127 and "no-such-command" in missing.stderr
