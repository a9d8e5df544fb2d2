"""The docker end-to-end suite's manners, checked without docker: it builds and runs an image under its
own tag (never the developer's `ledgerd:local`), and a long build shows its steps as they happen
instead of leaving the terminal silent for minutes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.cluster import COMPOSE_FILE, DEVELOPER_IMAGE, E2E_IMAGE, Cluster, ClusterError, run_with_progress

pytestmark = pytest.mark.timeout(30)


def test_the_suite_runs_its_own_image_not_the_developers(tmp_path: Path) -> None:
    assert E2E_IMAGE != DEVELOPER_IMAGE
    host_ports = {"node0": 1, "node1": 2, "node2": 3, "node3": 4}
    cluster = Cluster(compose_cmd=["docker", "compose"], project="p", data_dir=tmp_path, host_ports=host_ports)
    assert cluster.env["LEDGERD_IMAGE"] == E2E_IMAGE
    other = Cluster(["docker", "compose"], "p", tmp_path, host_ports, image="ledgerd:other")
    assert other.env["LEDGERD_IMAGE"] == "ledgerd:other"
    # The compose file takes its image from that variable, so the env above is what compose runs.
    images = re.findall(r"^\s*image:\s*(\S+)", COMPOSE_FILE.read_text(), flags=re.MULTILINE)
    assert images and all(image.startswith("${LEDGERD_IMAGE") for image in images), images


def test_the_image_fixture_builds_the_test_tag() -> None:
    conftest = (Path(__file__).parents[1] / "e2e" / "conftest.py").read_text()
    build = re.search(r"run_with_progress\(\[str\(ROOT / \"scripts\" / \"docker-build\"\), \"--tag\", (\w+)\]",
                      conftest)
    assert build is not None and build.group(1) == "tag"
    assert 'tag = os.environ.get("LEDGERD_E2E_IMAGE") or E2E_IMAGE' in conftest


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "build.sh"
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return [str(path)]


def test_steps_are_shown_as_they_come(tmp_path: Path) -> None:
    said: list[tuple[float, str]] = []
    argv = _script(tmp_path, "echo '==> base image' >&2\necho '    using python:3.11-slim' >&2\n"
                             "echo '#5 [2/7] RUN pip install ...'\necho '     deeper noise'\n"
                             "sleep 3\necho '==> docker build -t ledgerd:test' >&2\n")
    run_with_progress(argv, lambda line: said.append((time.monotonic(), line)), timeout_s=20,
                      progress_every_s=60)
    lines = [line for _, line in said]
    assert lines == ["  ==> base image", "  using python:3.11-slim", "  ==> docker build -t ledgerd:test"]
    # The first step was shown while the command still ran, not all at the end.
    assert said[2][0] - said[0][0] >= 1.0


def test_a_quiet_build_still_says_it_is_running(tmp_path: Path) -> None:
    said: list[str] = []
    run_with_progress(_script(tmp_path, "echo 'compiling'\nsleep 3\n"), said.append, timeout_s=20,
                      progress_every_s=1)
    assert any(line.startswith("  still running") and "compiling" in line for line in said), said


def test_a_failed_build_raises_with_the_end_of_its_output(tmp_path: Path) -> None:
    with pytest.raises(ClusterError) as caught:
        run_with_progress(_script(tmp_path, "echo 'docker-build: docker build failed' >&2\nexit 3\n"),
                          lambda _: None, timeout_s=20)
    assert "status 3" in str(caught.value) and "docker build failed" in str(caught.value)


def test_a_build_that_outlives_its_deadline_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "still-here"
    # A child in the background, like the docker client under scripts/docker-build.
    argv = _script(tmp_path, f"(sleep 2; touch {marker}) &\necho started\nwait\n")
    with pytest.raises(ClusterError, match="did not finish within"):
        run_with_progress(argv, lambda _: None, timeout_s=1)
    time.sleep(2.5)
    assert not marker.exists()
