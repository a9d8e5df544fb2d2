"""`ledgerd testnet`: generate the homes of a local (or docker compose) cluster.

Writes, under `out_dir`:

    node0/ .. node{N-1}/   node_key.pem (the node's Ed25519 key), config.toml, genesis.json
    accounts/              account0.pem .. account{M-1}.pem (funded keys, PKCS#8 PEM) and
                           index.json: [{"name", "address", "key_file", "balance"}]
    observer0/ ..          with --observers K: observer homes (fresh key, every validator as a
                           peer), REST on base_port+100+k and p2p on base_port+1100+k
    committee/             member0.pem .. member{K-1}.pem (governance committee keys) and
                           index.json: [{"name", "address", "key_file", "weight"}]; weight 1 each,
                           threshold 2/3 of the total weight (2 of 3 by default). K=0 writes no
                           committee: governance is then disabled on the chain.

Every node gets the identical genesis file. Node k serves REST on base_port+k and p2p on
base_port+1000+k; `hosts[k]` (default 127.0.0.1) is both its bind address and the host its peers
dial, which is what docker compose needs (service names node0..node3).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cli.join import write_observer_home
from ledger import keys
from ledger.genesis import ENGINES, Genesis, Validator
from ledger.governance import MAX_LIFETIME, MAX_MEMBERS, GenesisGovernance
from ledger.tx import CHAIN_ID_RE, MAX_SAFE_INT
from node.config import ConfigError, NodeConfig, save_config

P2P_PORT_OFFSET = 1000
DEFAULT_ACCOUNT_BALANCE = 1_000_000_000_000
MAX_VALIDATORS = 100
MAX_ACCOUNTS = 100_000
NODE_KEY_FILE = "node_key.pem"
GENESIS_FILE = "genesis.json"
DEFAULT_COMMITTEE = 3
DEFAULT_PROPOSAL_LIFETIME = 1000  # blocks; an idle chain makes no blocks, so this is not wall time
COMMITTEE_THRESHOLD = (2, 3)  # of the total weight
MAX_OBSERVERS = 100
OBSERVER_REST_OFFSET = 100  # observer k: REST on base_port+100+k, p2p on base_port+1100+k
OBSERVER_P2P_OFFSET = 1100


@dataclass(frozen=True)
class Testnet:
    """What `make_testnet` wrote."""

    out_dir: Path
    genesis: Genesis
    node_homes: tuple[Path, ...]
    node_ids: tuple[str, ...]
    account_files: tuple[Path, ...]
    rest_urls: tuple[str, ...]
    member_files: tuple[Path, ...] = ()
    observer_homes: tuple[Path, ...] = ()


def peer_url(host: str, port: int) -> str:
    # No path: the p2p layer adds its own (p2p.P2P_PATH) to a bare wss://host:port. TLS with a
    # certificate bound to the node key by the handshake needs no CA, so testnets are encrypted too.
    return f"wss://{host}:{port}"


def make_testnet(
    out_dir: Path, validators: int = 4, consensus: str = "pbft", chain_id: str = "ledger-local",
    accounts: int = 4, base_port: int = 8001, hosts: list[str] | None = None,
    account_balance: int | None = None, committee: int = DEFAULT_COMMITTEE,
    proposal_lifetime: int = DEFAULT_PROPOSAL_LIFETIME, observers: int = 0,
) -> Testnet:
    """Write a fresh testnet; raises ConfigError for bad arguments or a non-empty `out_dir`."""
    out_dir = Path(out_dir)
    if not 1 <= validators <= MAX_VALIDATORS:
        raise ConfigError(f"--validators must be between 1 and {MAX_VALIDATORS}")
    if consensus not in ENGINES:
        raise ConfigError(f"--consensus must be one of {', '.join(ENGINES)}")
    if not CHAIN_ID_RE.fullmatch(chain_id):
        raise ConfigError("--chain-id must be 1 to 64 characters of [A-Za-z0-9._-], starting alphanumeric")
    if not 0 <= accounts <= MAX_ACCOUNTS:
        raise ConfigError(f"--accounts must be between 0 and {MAX_ACCOUNTS}")
    if not 1 <= base_port or base_port + P2P_PORT_OFFSET + validators - 1 > 65535:
        raise ConfigError(f"--base-port must leave room for {validators} REST and p2p ports below 65536")
    if hosts is None:
        hosts = ["127.0.0.1"] * validators
    if len(hosts) != validators or any(not h or any(c.isspace() or c in "/:@" for c in h) for h in hosts):
        raise ConfigError(f"--hosts must list {validators} host names (one per node), comma-separated")
    balance = account_balance if account_balance is not None else \
        min(DEFAULT_ACCOUNT_BALANCE, MAX_SAFE_INT // max(accounts, 1))
    if accounts and not 1 <= balance * accounts <= MAX_SAFE_INT:
        raise ConfigError("the total genesis allocation must be between 1 and 2^53-1")
    if not 0 <= committee <= MAX_MEMBERS:
        raise ConfigError(f"--committee must be between 0 and {MAX_MEMBERS}")
    if not 1 <= proposal_lifetime <= MAX_LIFETIME:
        raise ConfigError(f"--proposal-lifetime must be between 1 and {MAX_LIFETIME} blocks")
    if not 0 <= observers <= MAX_OBSERVERS or base_port + OBSERVER_P2P_OFFSET + observers > 65536:
        raise ConfigError(f"--observers must be between 0 and {MAX_OBSERVERS}, with ports below 65536")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} already exists and is not empty; refusing to overwrite it")

    node_keys = [keys.PrivateKey.generate() for _ in range(validators)]
    account_keys = [keys.PrivateKey.generate() for _ in range(accounts)]
    member_keys = [keys.PrivateKey.generate() for _ in range(committee)]
    governance = GenesisGovernance(tuple((k.address, 1) for k in member_keys), *COMMITTEE_THRESHOLD,
                                   lifetime=proposal_lifetime) if member_keys else None
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time=int(time.time() * 1000),
        consensus=consensus,
        validators=tuple(Validator(k.address, f"node{i}") for i, k in enumerate(node_keys)),
        allocations=tuple((k.address, balance) for k in account_keys),
        governance=governance,
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        homes = []
        for i, node_key in enumerate(node_keys):
            home = out_dir / f"node{i}"
            home.mkdir()
            node_key.save(home / NODE_KEY_FILE)
            genesis.save(home / GENESIS_FILE)
            peers = {other.address: peer_url(hosts[j], base_port + P2P_PORT_OFFSET + j)
                     for j, other in enumerate(node_keys) if j != i}
            config = NodeConfig.model_validate({
                "home": home, "consensus": consensus,
                "node_key_file": NODE_KEY_FILE, "genesis_file": GENESIS_FILE, "data_dir": "data",
                "rest_host": hosts[i], "rest_port": base_port + i,
                "p2p_host": hosts[i], "p2p_port": base_port + P2P_PORT_OFFSET + i, "peers": peers,
            })
            save_config(config, home)
            homes.append(home)
        all_peers = {k.address: peer_url(hosts[j], base_port + P2P_PORT_OFFSET + j) for j, k in enumerate(node_keys)}
        observer_homes = tuple(
            write_observer_home(out_dir / f"observer{k}", genesis, all_peers, rest_host="127.0.0.1",
                                rest_port=base_port + OBSERVER_REST_OFFSET + k, p2p_host="127.0.0.1",
                                p2p_port=base_port + OBSERVER_P2P_OFFSET + k).home
            for k in range(observers))
        accounts_dir = out_dir / "accounts"
        accounts_dir.mkdir()
        files = []
        index = []
        for i, account_key in enumerate(account_keys):
            path = accounts_dir / f"account{i}.pem"
            account_key.save(path)
            files.append(path)
            index.append({"name": f"account{i}", "address": account_key.address, "key_file": path.name,
                          "balance": {"LDG": balance}})
        (accounts_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n")
        member_files = []
        if member_keys:
            committee_dir = out_dir / "committee"
            committee_dir.mkdir()
            members = []
            for i, member_key in enumerate(member_keys):
                path = committee_dir / f"member{i}.pem"
                member_key.save(path)
                member_files.append(path)
                members.append({"name": f"member{i}", "address": member_key.address, "key_file": path.name,
                                "weight": 1})
            (committee_dir / "index.json").write_text(json.dumps(members, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the testnet to {out_dir}: {exc.strerror or exc}") from exc
    return Testnet(
        out_dir=out_dir, genesis=genesis, node_homes=tuple(homes),
        node_ids=tuple(k.address for k in node_keys), account_files=tuple(files),
        rest_urls=tuple(f"http://{hosts[i]}:{base_port + i}" for i in range(validators)),
        member_files=tuple(member_files), observer_homes=observer_homes,
    )
