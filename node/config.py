"""Node configuration: one TOML file per node home, then LEDGERD_* environment variables, then flags.

Every limit the node enforces is a named setting here with a default that is sane for a laptop
cluster. The file is flat `name = value` lines plus a `[peers]` table (node id -> p2p URL); it is
read with `tomllib` and written by `render_config` (used by `ledgerd testnet`).

Precedence, lowest first: defaults, `<home>/config.toml`, environment variables named
`LEDGERD_<SETTING>` in upper case (e.g. `LEDGERD_REST_PORT=8080`; `LEDGERD_PEERS` is a JSON object),
and the `overrides` mapping (command-line flags; `None` values mean "flag not given"). Relative
paths are relative to the home directory.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ledger import keys

CONFIG_FILE = "config.toml"
ENV_PREFIX = "LEDGERD_"
MiB = 1024 * 1024


class ConfigError(Exception):
    """The node's configuration, key or genesis cannot be used; the message is one clear line."""


class NodeConfig(BaseModel):
    """The settings of one node. `home` is where the config file lives; it is not itself a setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default=Path("."), exclude=True)

    consensus: Literal["pbft", "raft"] | None = Field(
        default=None, description="engine this node expects; must equal genesis (unset: genesis decides)")
    data_dir: Path = Field(default=Path("data"), description="LevelDB directory (relative to the home)")
    node_key_file: Path = Field(
        default=Path("node_key.pem"), description="this node's Ed25519 key (PKCS#8 PEM)")
    genesis_file: Path = Field(default=Path("genesis.json"), description="the chain's genesis file")

    rest_host: str = Field(default="127.0.0.1", description="REST API bind address")
    rest_port: int = Field(default=8001, ge=0, le=65535, description="REST API port (0: any free port)")
    rest_tls_cert_file: Path | None = Field(
        default=None, description="serve REST over HTTPS with this certificate chain (PEM; unset: plain HTTP, "
                                  "e.g. behind a TLS-terminating reverse proxy)")
    rest_tls_key_file: Path | None = Field(
        default=None, description="the private key of rest_tls_cert_file (PEM, unencrypted)")
    p2p_host: str = Field(default="127.0.0.1", description="peer-to-peer bind address")
    p2p_port: int = Field(default=9001, ge=0, le=65535, description="peer-to-peer port (0: any free port)")
    peers: dict[str, str] = Field(
        default_factory=dict, description="validator node id -> p2p URL (wss://host:port; host names are "
                                          "resolved again on every connection attempt)")
    p2p_allow_plaintext: bool = Field(
        default=False,
        description="serve plain ws:// instead of wss:// and allow ws:// peer URLs: peer traffic is then "
                    "neither encrypted nor authenticated after the handshake (loopback tests only)")
    p2p_open_observers: bool = Field(
        default=True, description="let any node of this chain connect as an observer (it gets blocks and "
                                  "forwards transactions, never consensus traffic)")
    p2p_max_observer_links: int = Field(
        default=8, ge=0, description="most links to observers (non-validators) kept at once")
    p2p_advertise_url: str = Field(
        default="", description="the p2p URL peers use to reach this node, as their [peers] list it "
                                "(shown as p2p_url in /v1/status); empty: wss://p2p_host:p2p_port "
                                "(ws:// with p2p_allow_plaintext)")

    tick_ms: int = Field(
        default=50, ge=1, le=10_000, description="consensus tick; engine timeouts count ticks")
    max_body_bytes: int = Field(default=MiB, ge=1024, description="largest REST request body")
    max_batch_txs: int = Field(default=1000, ge=1, description="most transactions in one POST array")
    verify_processes: int = Field(
        default=2, ge=0, le=64,
        description="worker processes that check transaction signatures, started on first use "
                    "(0: two threads inside the node process)")
    mempool_max_txs: int = Field(
        default=50_000, ge=1, description="most transactions waiting in the mempool")
    mempool_max_bytes: int = Field(
        default=64 * MiB, ge=1024, description="most bytes of waiting transactions")
    mempool_max_future_per_sender: int = Field(
        default=64, ge=0, description="how far past its next nonce a sender may submit (future nonces held)")
    mempool_tx_ttl_s: float = Field(
        default=600.0, gt=0, description="a future-nonce transaction waiting longer than this is dropped")
    mempool_retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After hint when the mempool is full")
    max_block_txs: int = Field(
        default=2000, ge=1, description="most transactions this node puts in a block")
    block_interval_ms: int = Field(
        default=50, ge=0, le=10_000,
        description="a proposer builds its next block at least this long after the last commit, unless "
                    "a full block is waiting (0: at once); fewer, fuller blocks under load")
    max_block_bytes: int = Field(  # the engines refuse blocks over EngineConfig.max_block_bytes (8 MiB)
        default=4 * MiB, ge=1024, le=8 * MiB, description="most bytes this node puts in a block")
    max_block_time_drift_ms: int = Field(
        default=10_000, ge=0, description="refuse blocks timestamped this far ahead of the local clock")
    wait_commit_timeout_s: float = Field(default=30.0, gt=0, description="longest ?wait=commit")
    max_ws_subscribers: int = Field(default=64, ge=1, description="most concurrent /v1/events streams")
    ws_buffer_blocks: int = Field(
        default=256, ge=1, description="committed blocks buffered per event subscriber before it is cut off")
    ws_send_timeout_s: float = Field(
        default=10.0, gt=0, description="an event subscriber slower than this is cut off")
    ws_heartbeat_s: float = Field(default=20.0, gt=0, description="ping interval on event streams")
    ws_client_frames_per_s: float = Field(
        default=5.0, gt=0,
        description="frames (pings, pongs, messages) an event subscriber may send per second on average; "
                    "a flood closes its stream with 1008")
    shutdown_timeout_s: float = Field(
        default=5.0, gt=0, description="how long stopping waits for in-flight requests")
    http_idle_timeout_s: float = Field(
        default=30.0, gt=0,
        description="a REST connection with no request under way for this long is closed (keep-alive)")
    http_header_timeout_s: float = Field(
        default=10.0, gt=0,
        description="a request head (request line and headers) must arrive within this long of its first byte")
    http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request body must arrive within this long (408 otherwise)")
    http_linger_timeout_s: float = Field(
        default=2.0, ge=0,
        description="after answering a request whose body it did not read, the node discards what of the "
                    "body still arrives for at most this long, then closes the connection")
    http_max_connections: int = Field(default=1024, ge=1, description="most open REST connections")
    http_max_connections_per_ip: int = Field(
        default=128, ge=1, description="most open REST connections from one source address")
    http_max_headers: int = Field(default=64, ge=8, le=1024, description="most header lines in one request")
    http_max_line_bytes: int = Field(
        default=8190, ge=1024, le=65536, description="longest request line (URL) or header line")
    explorer_enabled: bool = Field(
        default=True, description="serve the web explorer at /explorer/ (and redirect / there); the REST "
                                  "reads behind it are served either way")
    gossip_inbox_batches: int = Field(
        default=256, ge=1, description="gossiped transaction batches queued for admission; more are dropped")
    gossip_flush_ms: int = Field(
        default=5, ge=0, le=1000,
        description="accepted transactions are gathered this long into one gossip batch (0: send at once)")
    gossip_resend_after_s: float = Field(
        default=3.0, gt=0, le=3600,
        description="a transaction pending here this long is gossiped again (gossip is best effort)")
    gossip_max_batch_bytes: int = Field(
        default=MiB, ge=64 * 1024,
        description="largest gossiped transaction batch, sent or received (a bigger one from a peer is "
                    "dropped before it is parsed); at least the largest transaction")
    gossip_max_pending_txs: int = Field(
        default=50_000, ge=1, description="accepted transactions waiting to be gossiped; more are not gossiped")
    stall_rounds: int = Field(
        default=3, ge=1, le=1000,
        description="this many round timeouts (PBFT) or election timeouts (Raft) without a commit and "
                    "/v1/status reports consensus_health as stalled")
    status_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="how often this node tells its peers its height")
    sync_batch_blocks: int = Field(
        default=64, ge=1, le=10_000,
        description="most blocks asked for in one block-sync request (also bounded by the p2p frame size)")
    sync_request_timeout_s: float = Field(
        default=10.0, gt=0, description="a block-sync request unanswered this long is given up (next peer)")
    sync_lag_grace_s: float = Field(
        default=2.0, gt=0,
        description="one block behind the best peer for this long (no progress) starts block sync")
    sync_penalty_s: float = Field(
        default=30.0, gt=0,
        description="a peer that served an invalid block is not asked again for this long (doubling)")
    runtime_max_inbox: int = Field(
        default=10_000, ge=16, description="peer messages queued for the consensus loop; more are dropped")
    dropped_tx_memory: int = Field(
        default=10_000, ge=0, description="how many dropped transactions tx status still remembers (and why)")
    log_format: Literal["plain", "json"] = Field(default="plain", description="log line format")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, peers: dict[str, str]) -> dict[str, str]:
        for node_id, url in peers.items():
            if not keys.is_address(node_id):
                raise ValueError(f"peer id {node_id[:70]!r} is not a node id (64 lowercase hex characters)")
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"peer {node_id[:16]}: URL {url[:100]!r} must be ws://host:port or wss://host:port")
        return peers

    @field_validator("p2p_advertise_url")
    @classmethod
    def _check_advertise_url(cls, url: str) -> str:
        if url and not url.startswith(("ws://", "wss://")):
            raise ValueError(f"p2p_advertise_url {url[:100]!r} must be ws://host:port or wss://host:port")
        return url

    @model_validator(mode="after")
    def _rest_tls_pair(self) -> NodeConfig:
        if (self.rest_tls_cert_file is None) != (self.rest_tls_key_file is None):
            raise ValueError("rest_tls_cert_file and rest_tls_key_file go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _plaintext_is_explicit(self) -> NodeConfig:
        if not self.p2p_allow_plaintext:
            for node_id, url in self.peers.items():
                if url.startswith("ws://"):
                    raise ValueError(f"peer {node_id[:16]}: URL {url[:100]!r} is plain ws://; use wss:// (or set "
                                     "p2p_allow_plaintext = true, for loopback tests only)")
        return self

    def path(self, name: Literal["data_dir", "node_key_file", "genesis_file", "rest_tls_cert_file",
                                 "rest_tls_key_file"]) -> Path:
        value: Path | None = getattr(self, name)
        if value is None:
            raise ValueError(f"{name} is not set")
        return value if value.is_absolute() else self.home / value


SETTINGS: tuple[str, ...] = tuple(name for name in NodeConfig.model_fields if name != "home")


def load_config(
    home: Path, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Read `<home>/config.toml` (missing file: defaults), apply LEDGERD_* and `overrides`."""
    home = Path(home)
    if not home.is_dir():
        raise ConfigError(f"the node home {home} does not exist or is not a directory (`ledgerd testnet`?)")
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    config_file = home / CONFIG_FILE
    if config_file.exists():
        try:
            with config_file.open("rb") as fh:
                from_file = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read {config_file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file} is not valid TOML: {exc}") from exc
        for name, value in from_file.items():
            values[name] = value
            source[name] = str(config_file)
    environ = os.environ if environ is None else environ
    for name in SETTINGS:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if name == "peers":
            try:
                values[name] = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(f"{ENV_PREFIX}PEERS must be a JSON object (node id -> URL): {exc}") from exc
        else:
            values[name] = raw
        source[name] = ENV_PREFIX + name.upper()
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = value
        source[name] = "the command line"
    if "home" in values:
        raise ConfigError(f"'home' is not a setting ({source['home']}); the home is given by --home")
    try:
        return NodeConfig(home=home, **values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: Mapping[str, str]) -> str:
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "config"
        where = f" (from {source[name]})" if name in source else ""
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting {name!r}{where}")
        else:
            problems.append(f"{name}: {err['msg']}{where}")
    return "invalid configuration: " + "; ".join(problems)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes with ensure_ascii are a subset of TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=True)


def render_config(config: NodeConfig) -> str:
    """The TOML text of every setting, each with its description as a comment."""
    lines = ["# ledgerd node configuration. Environment variables LEDGERD_<SETTING> and command-line",
             "# flags override these values. Relative paths are relative to this file's directory.", ""]
    data = config.model_dump(mode="json")
    for name in SETTINGS:
        if name == "peers":
            continue
        field = NodeConfig.model_fields[name]
        value = data[name]
        if field.description:
            lines.append(f"# {field.description}")
        if value is None:
            lines.append(f"# {name} =")
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    lines += ["", "# " + (NodeConfig.model_fields["peers"].description or "peers"), "[peers]"]
    for node_id, url in data["peers"].items():
        lines.append(f"{_toml_value(node_id)} = {_toml_value(url)}")
    return "\n".join(lines) + "\n"


def save_config(config: NodeConfig, home: Path) -> Path:
    path = Path(home) / CONFIG_FILE
    path.write_text(render_config(config))
    return path
