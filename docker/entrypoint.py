"""Container entrypoint for the ledgerd image: the testnet init job, a validator node, its healthcheck.

    entrypoint.py init         create the testnet in /data once; later runs skip
    entrypoint.py node NAME    wait until init has finished, then run `ledgerd start --home /data/NAME`
    entrypoint.py healthcheck  exit 0 when this container's node answers GET /healthz
    entrypoint.py ready        exit 0 when the node on LEDGERD_REST_PORT (8001) is running and not
                               behind the peers it sees (the Swarm/Kubernetes health: "caught up")
    entrypoint.py CMD ...      anything else runs as given (e.g. `ledgerd --help`)

Compose v1 (1.29) cannot make a service wait for another one to *complete*, so the handshake lives
here instead: init writes the testnet into a staging folder, moves it into place and writes the ready
marker last; a node starts only once the marker exists. The data folder is a bind mount that the
user reads keys from, so files are handed to a host user (see `_owner`) and nodes run as that user.
Standard library only: this runs before anything else in the container.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

DATA = Path("/data")
READY_MARKER = ".testnet-ready"
STAGING_DIR = ".init-staging"
# The init job mounts the project folder here read-only; its owner is the host user who checked the
# project out, the best guess for who should own the keys when the data folder was made by dockerd.
PROJECT_REF = Path("/run/ledgerd/project")
DEFAULT_INIT_TIMEOUT_S = 180.0
WAIT_POLL_S = 0.5
WAIT_REPORT_EVERY_S = 10.0
HEALTHCHECK_TIMEOUT_S = 3.0
# Written by `node` before it execs ledgerd: the healthcheck's REST port (container-local, not /data).
NODE_INFO = Path("/run/ledgerd-node.json")
# Inside a container the node listens on every interface: the port mapping and the healthcheck reach
# it that way, and it keeps listening when `docker network disconnect/connect` changes its address.
# Peers still dial the service names from config.toml.
BIND_ALL = "0.0.0.0"


class EntrypointError(Exception):
    """A problem the operator must fix; printed as one line, exit status 1."""


def _say(message: str) -> None:
    print(f"ledgerd-docker: {message}", file=sys.stderr, flush=True)


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    text = _env(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise EntrypointError(f"{name} must be an integer, got {text!r}") from None


def _owner(data: Path) -> tuple[int, int]:
    """The uid/gid that should own the testnet files: LEDGERD_UID/LEDGERD_GID when set, else the
    owner of the data folder, else the owner of the project folder, else root."""
    if os.environ.get("LEDGERD_UID", "").strip():
        uid = _env_int("LEDGERD_UID", 0)
        return uid, _env_int("LEDGERD_GID", uid)
    for ref in (data, PROJECT_REF):
        try:
            st = ref.stat()
        except OSError:
            continue
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    return 0, 0


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _hosts(validators: int) -> list[str]:
    hosts = [h for h in _env("LEDGERD_HOSTS", "").split(",") if h]
    if not hosts:
        hosts = [f"node{k}" for k in range(validators)]
    if len(hosts) != validators:
        raise EntrypointError(f"LEDGERD_HOSTS names {len(hosts)} hosts for {validators} validators")
    return hosts


def _testnet_entries(hosts: list[str]) -> list[str]:
    # `ledgerd testnet` writes one folder per node plus accounts/; the node folders are named
    # node0..N-1 whatever the host names are.
    return [f"node{k}" for k in range(len(hosts))] + ["accounts"]


def cmd_init() -> int:
    data = DATA
    if not data.is_dir():
        raise EntrypointError(f"{data} is not a directory: mount the data folder there")
    validators = _env_int("LEDGERD_VALIDATORS", 4)
    consensus = _env("LEDGERD_CONSENSUS", "pbft")
    hosts = _hosts(validators)
    entries = _testnet_entries(hosts)
    marker = data / READY_MARKER
    uid, gid = _owner(data)

    if marker.exists():
        _report_existing(marker, consensus)
        return 0
    present = [e for e in entries if (data / e).exists()]
    if present and len(present) == len(entries):
        # Everything is in place but the marker is missing: either an init was stopped between the
        # last move and the marker, or the user generated this testnet with `ledgerd testnet`.
        _say(f"adopting the existing testnet in {data}")
    elif present:
        raise EntrypointError(
            f"{data} holds part of a testnet ({', '.join(present)}) but not all of it; "
            "remove the data folder (./compose-data) to start a fresh one"
        )
    else:
        _generate(data, validators, consensus, hosts, entries, uid, gid)

    info = {"chain_id": _chain_id(data), "consensus": consensus, "validators": validators, "hosts": hosts,
            "created_unix": int(time.time())}
    tmp = data / (READY_MARKER + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    _chown_tree(tmp, uid, gid)
    os.replace(tmp, marker)
    _say(f"testnet ready: chain {info['chain_id']}, {validators} validators, consensus {consensus}; "
         f"funded account keys in accounts/ (owner uid {uid})")
    return 0


def _chain_id(data: Path) -> str:
    try:
        return str(json.loads((data / "node0" / "genesis.json").read_text())["chain_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def _report_existing(marker: Path, consensus: str) -> None:
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        info = {}
    existing = info.get("consensus", "?")
    _say(f"a testnet already exists (chain {info.get('chain_id', '?')}, consensus {existing}); keeping it")
    if existing != consensus:
        _say(f"note: LEDGERD_CONSENSUS={consensus} applies only to a new testnet; "
             "remove the data folder (./compose-data) to switch")


def _generate(data: Path, validators: int, consensus: str, hosts: list[str], entries: list[str],
              uid: int, gid: int) -> None:
    staging = data / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    out = staging / "testnet"
    argv = ["ledgerd", "testnet", "--validators", str(validators), "--out", str(out),
            "--consensus", consensus, "--hosts", ",".join(hosts),
            "--base-port", str(_env_int("LEDGERD_BASE_PORT", 8001))]
    if _env("LEDGERD_CHAIN_ID", ""):
        argv += ["--chain-id", _env("LEDGERD_CHAIN_ID", "")]
    if _env("LEDGERD_ACCOUNTS", ""):
        argv += ["--accounts", str(_env_int("LEDGERD_ACCOUNTS", 0))]
    _say("running: " + " ".join(argv))
    # Its report names the staging folder, which is gone once the files are moved into place: it is
    # printed after the move, with the paths the nodes really use.
    result = subprocess.run(argv, check=False, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout)
        shutil.rmtree(staging, ignore_errors=True)
        raise EntrypointError(f"`ledgerd testnet` failed with exit status {result.returncode}")
    missing = [e for e in entries if not (out / e).exists()]
    if missing:
        raise EntrypointError(f"`ledgerd testnet` did not write {', '.join(missing)} into {out}")
    _chown_tree(staging, uid, gid)
    for name in sorted(os.listdir(out)):
        os.replace(out / name, data / name)
    shutil.rmtree(staging)
    if os.geteuid() == 0:
        os.chown(data, uid, gid)
    for line in result.stdout.splitlines():
        if line.startswith("start a node with:"):
            continue  # replaced below: in a container the node services start the nodes
        _say(line.replace(str(out), str(data)))
    _say(f"each node service runs `ledgerd start --home {data}/nodeK` (`entrypoint.py node nodeK`)")


def cmd_node(name: str) -> int:
    data = DATA
    home = data / name
    marker = data / READY_MARKER
    timeout_s = float(_env_int("LEDGERD_INIT_TIMEOUT_S", int(DEFAULT_INIT_TIMEOUT_S)))
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + WAIT_REPORT_EVERY_S
    while not marker.exists():
        now = time.monotonic()
        if now >= deadline:
            raise EntrypointError(
                f"the testnet is not ready after {timeout_s:.0f} s ({marker} missing); "
                "see the init service's log (docker compose logs init)"
            )
        if now >= next_report:
            _say(f"waiting for the init service to create the testnet in {data}")
            next_report = now + WAIT_REPORT_EVERY_S
        time.sleep(WAIT_POLL_S)
    if not home.is_dir():
        raise EntrypointError(f"{home} does not exist: the testnet in {data} has no node called {name!r}")
    NODE_INFO.write_text(json.dumps({"home": str(home), "rest_port": _rest_port(home)}) + "\n")
    argv = ["ledgerd", "start", "--home", str(home), "--rest-host", BIND_ALL, "--p2p-host", BIND_ALL]
    advertise = _advertise_url(home)
    if advertise:
        # Binding every interface hides the name peers dial; /v1/status reports this one instead.
        os.environ["LEDGERD_P2P_ADVERTISE_URL"] = advertise
    st = home.stat()
    if os.geteuid() == 0 and st.st_uid != 0:
        # Run as the owner of the node's folder so that everything the node writes stays readable
        # and removable by the host user who owns the bind mount.
        os.setgroups([])
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)
    os.environ["HOME"] = str(home)
    _say(f"starting {name} as uid {os.getuid()}: {' '.join(argv)}")
    os.execvp(argv[0], argv)
    return 1  # not reached: execvp replaces this process


def _rest_port(home: Path) -> int:
    """The node's REST port as `ledgerd start` will see it: LEDGERD_REST_PORT, else config.toml."""
    if os.environ.get("LEDGERD_REST_PORT", "").strip():
        return _env_int("LEDGERD_REST_PORT", 0)
    try:
        with (home / "config.toml").open("rb") as fh:
            port = tomllib.load(fh).get("rest_port", 8001)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EntrypointError(f"cannot read {home / 'config.toml'}: {exc}") from None
    if not isinstance(port, int):
        raise EntrypointError(f"rest_port in {home / 'config.toml'} is not an integer")
    return port


def _advertise_url(home: Path) -> str | None:
    """The p2p URL peers list for this node (ws://<p2p_host from config.toml>:<p2p_port>), unless one is
    configured already; None when config.toml does not say."""
    if os.environ.get("LEDGERD_P2P_ADVERTISE_URL", "").strip():
        return None
    try:
        with (home / "config.toml").open("rb") as fh:
            config = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None  # _rest_port has reported an unreadable file already
    host, port = config.get("p2p_host"), config.get("p2p_port")
    if config.get("p2p_advertise_url") or not isinstance(host, str) or host in ("", BIND_ALL) \
            or not isinstance(port, int):
        return None
    return f"ws://{host}:{port}"


def cmd_healthcheck() -> int:
    try:
        port = int(json.loads(NODE_INFO.read_text())["rest_port"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"the node has not started yet ({NODE_INFO}: {exc})", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=HEALTHCHECK_TIMEOUT_S) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


# A node this many blocks behind its best peer still counts as caught up (blocks commit while we ask).
READY_MAX_BLOCKS_BEHIND = 2


def cmd_ready() -> int:
    """Serving and caught up: what an orchestrator should wait for before taking the next validator down.

    Not "linked to a peer": Swarm and Kubernetes publish a task's name only once it is healthy, so
    a health that waited for peers would keep every validator from ever finding another.
    """
    port = _env_int("LEDGERD_REST_PORT", 8001)
    url = f"http://127.0.0.1:{port}/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=HEALTHCHECK_TIMEOUT_S) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    problems = []
    if status.get("state") != "running":
        problems.append(f"state is {status.get('state')!r}")
    if status.get("syncing") or (status.get("blocks_behind") or 0) > READY_MAX_BLOCKS_BEHIND:
        problems.append(f"catching up ({status.get('blocks_behind')} blocks behind)")
    if problems:
        print("not ready: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        argv = ["ledgerd", "--help"]
    try:
        if argv[0] == "init" and len(argv) == 1:
            return cmd_init()
        if argv[0] == "node" and len(argv) == 2:
            return cmd_node(argv[1])
        if argv[0] == "healthcheck" and len(argv) == 1:
            return cmd_healthcheck()
        if argv[0] == "ready" and len(argv) == 1:
            return cmd_ready()
        if argv[0] in ("init", "node", "healthcheck", "ready"):
            raise EntrypointError("usage: init | node NAME | healthcheck | ready | COMMAND [ARGS...]")
    except EntrypointError as exc:
        _say(f"error: {exc}")
        return 1
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        _say(f"error: no such command: {argv[0]} (the entrypoint knows init, node NAME, healthcheck)")
        return 127
    except PermissionError:
        _say(f"error: {argv[0]} is not executable")
        return 126
    return 1  # not reached: execvp replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
