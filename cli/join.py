"""`ledgerd join`: write the home of an observer of an existing chain.

The home holds a fresh node key (made here; it never leaves this machine), a copy of the chain's
genesis file and a config that dials the given peers. Started with `ledgerd start --home DIR`, the
node follows the chain as an observer; its node id (printed here, and by `ledgerd status`) is what
the committee names in `add-validator` to make it a validator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ledger import keys
from ledger.errors import Rejected
from ledger.genesis import Genesis
from node.config import ConfigError, NodeConfig, save_config

NODE_KEY_FILE = "node_key.pem"
GENESIS_FILE = "genesis.json"
DEFAULT_REST_PORT = 8101  # observer0 of a testnet on the default base port: P+100
DEFAULT_P2P_PORT = 9101  # and P+1100


@dataclass(frozen=True)
class JoinedHome:
    home: Path
    node_id: str
    rest_url: str
    p2p_url: str


def parse_peer(text: str) -> tuple[str, str]:
    """ID=URL, as `--peer` takes it; raises ConfigError with what is wrong."""
    node_id, sep, url = text.partition("=")
    if not sep or not keys.is_address(node_id) or not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"--peer {text[:80]!r} must be NODE_ID=wss://host:port (or ws:// with --allow-plaintext; "
                          "NODE_ID: 64 lowercase hex)")
    return node_id, url


def write_observer_home(out: Path, genesis: Genesis, peers: dict[str, str], *, rest_host: str = "127.0.0.1",
                        rest_port: int = DEFAULT_REST_PORT, p2p_host: str = "127.0.0.1",
                        p2p_port: int = DEFAULT_P2P_PORT, allow_plaintext: bool = False) -> JoinedHome:
    """Write an observer's home into `out` (new or empty); ConfigError for bad input."""
    if not peers:
        raise ConfigError("an observer needs at least one --peer to follow the chain")
    strangers = [p for p in peers if p not in genesis.validator_ids]
    if strangers and len(strangers) == len(peers):
        raise ConfigError(f"no --peer is a validator of the genesis chain {genesis.chain_id} (e.g. "
                          f"{strangers[0][:16]}…); block sync needs at least one")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; refusing to overwrite it")
    values = {
        "home": out, "consensus": genesis.consensus, "node_key_file": NODE_KEY_FILE,
        "genesis_file": GENESIS_FILE, "data_dir": "data", "rest_host": rest_host, "rest_port": rest_port,
        "p2p_host": p2p_host, "p2p_port": p2p_port, "peers": dict(peers),
    }
    if allow_plaintext:
        values["p2p_allow_plaintext"] = True
    try:
        config = NodeConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigError(f"invalid settings: {where}: {first['msg']}") from None
    key = keys.PrivateKey.generate()
    try:
        out.mkdir(parents=True, exist_ok=True)
        key.save(out / NODE_KEY_FILE)
        genesis.save(out / GENESIS_FILE)
        save_config(config.model_copy(update={"home": out}), out)
    except OSError as exc:
        raise ConfigError(f"cannot write the observer home {out}: {exc.strerror or exc}") from exc
    scheme = "ws" if allow_plaintext else "wss"
    return JoinedHome(out, key.address, f"http://{rest_host}:{rest_port}", f"{scheme}://{p2p_host}:{p2p_port}")


def join(genesis_file: Path, peer_args: list[str], out: Path, rest_port: int, p2p_port: int,
         allow_plaintext: bool = False) -> JoinedHome:
    try:
        genesis = Genesis.load(genesis_file)
    except Rejected as exc:
        raise ConfigError(exc.message) from None
    peers = dict(parse_peer(p) for p in peer_args)
    return write_observer_home(out, genesis, peers, rest_port=rest_port, p2p_port=p2p_port,
                               allow_plaintext=allow_plaintext)
