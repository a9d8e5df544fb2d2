"""Fixtures for the docker compose end-to-end tests.

One cluster per test session (building it costs tens of seconds, minutes the first time, with its
steps shown as they happen): `./scripts/docker-build --tag ledgerd:test`, then
`up -d` under a unique project name, with a data folder in pytest's tmp dir and free host ports, then
a wait for all four nodes to be healthy. The cluster is always torn down (`down --volumes
--remove-orphans`) and its data folder removed, whatever the tests did.

Skipped only when docker or a compose tool is absent. Settings (environment):
    LEDGERD_E2E_COMPOSE        force a compose command, e.g. "docker-compose" or "docker compose"
    LEDGERD_E2E_BASE_PORT      host ports BASE..BASE+3 for node0..node3 (default: free ports)
    LEDGERD_E2E_IMAGE          the image tag the suite builds and runs (default ledgerd:test: the
                               ledgerd:local a developer builds with ./scripts/docker-build is left alone)
    LEDGERD_E2E_SKIP_BUILD=1   use the existing test image as it is
    LEDGERD_E2E_KEEP=1         leave the cluster and its data running after the session (debugging)
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    DEVELOPER_IMAGE,
    E2E_IMAGE,
    NODES,
    ROOT,
    Cluster,
    ClusterError,
    find_compose,
    free_ports,
    run_with_progress,
)

BUILD_TIMEOUT_S = 1200.0
UP_TIMEOUT_S = 240.0


def _host_ports() -> dict[str, int]:
    base = os.environ.get("LEDGERD_E2E_BASE_PORT", "").strip()
    if base:
        if not base.isdigit() or not 1024 <= int(base) <= 65535 - len(NODES):
            raise pytest.UsageError(f"LEDGERD_E2E_BASE_PORT must be a port number, got {base!r}")
        return {name: int(base) + k for k, name in enumerate(NODES)}
    return dict(zip(NODES, free_ports(len(NODES)), strict=True))


def _say(message: str) -> None:
    # Progress of a multi-minute fixture belongs on the terminal even while pytest captures output.
    print(f"[e2e] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    found = find_compose()
    if found is None:
        pytest.skip("no compose tool: neither `docker compose` (v2) nor `docker-compose` (v1) is installed")
    return found


@pytest.fixture(scope="session")
def image(compose_cmd: list[str]) -> str:
    """The ledgerd image under its own tag, freshly built with ./scripts/docker-build (cached layers make
    that quick after the first time)."""
    tag = os.environ.get("LEDGERD_E2E_IMAGE") or E2E_IMAGE
    if os.environ.get("LEDGERD_E2E_SKIP_BUILD") != "1":
        started = time.monotonic()
        replaced = (f"{DEVELOPER_IMAGE} is left as it is" if tag != DEVELOPER_IMAGE
                    else f"this REPLACES your {DEVELOPER_IMAGE}, as LEDGERD_E2E_IMAGE asks")
        _say(f"building the test image {tag} with ./scripts/docker-build; {replaced} (minutes the first time)")
        run_with_progress([str(ROOT / "scripts" / "docker-build"), "--tag", tag], _say, timeout_s=BUILD_TIMEOUT_S)
        _say(f"image {tag} built in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="session")
def cluster(image: str, compose_cmd: list[str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    project = "ledgerde2e" + secrets.token_hex(4)
    data_dir: Path = tmp_path_factory.mktemp("compose-data")
    c = Cluster(compose_cmd=compose_cmd, project=project, data_dir=data_dir, host_ports=_host_ports(),
                image=image)
    keep = os.environ.get("LEDGERD_E2E_KEEP") == "1"
    try:
        started = time.monotonic()
        _say(f"{' '.join(compose_cmd)} -p {project} up -d (data {data_dir}, ports {c.host_ports})")
        c.compose("up", "-d", timeout_s=UP_TIMEOUT_S)
        c.wait_healthy(NODES, UP_TIMEOUT_S)
        _say(f"4 nodes healthy in {time.monotonic() - started:.0f} s")
        yield c
    finally:
        if keep:
            _say(f"LEDGERD_E2E_KEEP=1: leaving project {project} running, data in {data_dir}")
        else:
            c.down()
            shutil.rmtree(data_dir, ignore_errors=True)
            _say(f"project {project} torn down")


@pytest.fixture
def healed(cluster: Cluster) -> Iterator[Cluster]:
    """The session cluster with every node up and connected, before and after the test."""
    cluster.heal()
    cluster.wait_healthy(NODES, UP_TIMEOUT_S)
    try:
        yield cluster
    finally:
        try:
            cluster.heal()
        except ClusterError as exc:  # the session teardown still removes everything
            _say(f"could not heal the cluster after the test: {exc}")
