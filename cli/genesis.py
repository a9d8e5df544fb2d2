"""`ledgerd genesis`: the ceremony that starts a chain run by several institutions.

Every private key stays on the machine that made it; only node ids, p2p URLs and the genesis file
travel (by whatever channel the institutions trust: mail, a shared repository):

    each institution     ledgerd genesis node-info --home DIR --p2p-url wss://HOST:PORT --name NAME
                         (makes DIR/node_key.pem once, never overwrites it; prints one JSON line)
    the coordinator      ledgerd genesis init --draft ceremony.json --chain-id ID [--consensus pbft]
                             [--member ADDR[=WEIGHT]]... [--account ADDR=AMOUNT]...
                         ledgerd genesis add-validator --draft ceremony.json --info 'JSON LINE'
                         ledgerd genesis finalize --draft ceremony.json --out DIR
                         (writes DIR/genesis.json and DIR/peers.json, prints the genesis hash)
    each institution     ledgerd genesis node-home --home DIR --genesis genesis.json --peers peers.json
                             --expect-hash HASH [--p2p-port P --rest-port R ...]
                         (checks the hash and that its node is a validator, writes genesis + config)
                         ledgerd start --home DIR
    anyone               ledgerd genesis hash genesis.json

The draft is plain JSON ({"genesis": {...}, "peers": {node id: URL}}) so it can be reviewed and
kept under version control; `finalize` checks it with the same rules `ledgerd start` applies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from cli.errors import CliError
from ledger import keys
from ledger.errors import Rejected
from ledger.genesis import ENGINES, Genesis
from ledger.governance import MAX_MEMBERS, GenesisGovernance
from ledger.tx import CHAIN_ID_RE, MAX_SAFE_INT
from node.config import ConfigError, NodeConfig, save_config

NODE_KEY_FILE = "node_key.pem"
GENESIS_FILE = "genesis.json"
PEERS_FILE = "peers.json"
DEFAULT_THRESHOLD = (2, 3)
DEFAULT_LIFETIME = 1000
MAX_DRAFT_BYTES = 16 * 1024 * 1024


def _usage(parser: argparse.ArgumentParser, message: str) -> Callable[[argparse.Namespace], int]:
    def fail(args: argparse.Namespace) -> int:
        print(f"{parser.prog}: error: {message} (see '{parser.prog} --help')", file=sys.stderr)
        return 2
    return fail


def _address(text: str, what: str) -> str:
    value = text.strip().lower()
    if not keys.is_address(value):
        raise CliError(f"{what} {text[:80]!r} is not an address (64 hex characters)")
    return value


def _p2p_url(text: str) -> str:
    try:
        parsed = urlsplit(text)
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in ("wss", "ws") or not parsed.hostname or port is None:
        raise CliError(f"p2p URL {text[:100]!r} must be wss://HOST:PORT (HOST may be a DNS name)")
    return text


def _pair(text: str, what: str, default: int | None) -> tuple[str, int]:
    address, sep, amount = text.partition("=")
    if not sep and default is None:
        raise CliError(f"{what} {text[:100]!r} must be ADDRESS=NUMBER")
    try:
        number = int(amount) if sep else default
    except ValueError:
        raise CliError(f"{what} {text[:100]!r}: {amount!r} is not an integer") from None
    assert number is not None
    if not 1 <= number <= MAX_SAFE_INT:
        raise CliError(f"{what} {text[:100]!r}: the number must be between 1 and 2^53-1")
    return _address(address, what), number


def _read_json(path: Path, what: str) -> Any:
    try:
        if path.stat().st_size > MAX_DRAFT_BYTES:
            raise CliError(f"{what} {path} is larger than {MAX_DRAFT_BYTES} bytes")
        return json.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(f"{what} {path} is not valid JSON: {exc}") from None


def _write(path: Path, data: Any) -> None:
    try:
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def _load_draft(path: Path) -> dict[str, Any]:
    draft = _read_json(path, "the draft")
    if not isinstance(draft, dict) or set(draft) != {"genesis", "peers"} or not isinstance(draft["genesis"], dict) \
            or not isinstance(draft["peers"], dict) or not isinstance(draft["genesis"].get("validators"), list):
        raise CliError(f"{path} is not a draft made by `ledgerd genesis init`")
    return draft


# --- the commands -------------------------------------------------------------------------------


def cmd_node_info(args: argparse.Namespace) -> int:
    home = Path(args.home)
    key_file = home / NODE_KEY_FILE
    try:
        home.mkdir(parents=True, exist_ok=True)
        if key_file.exists():
            key = keys.PrivateKey.load(key_file)  # made before: the same identity, never a new one
        else:
            key = keys.PrivateKey.generate()
            key.save(key_file)
    except OSError as exc:
        raise CliError(f"cannot create the node key in {home}: {exc.strerror}") from None
    except Rejected as exc:
        raise CliError(exc.message) from None
    info = {"name": args.name, "node_id": key.address, "p2p_url": _p2p_url(args.p2p_url)}
    print(json.dumps(info, sort_keys=True))
    print(f"send the line above to the coordinator; the key stays in {key_file}", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    draft_path = Path(args.draft)
    if draft_path.exists():
        raise CliError(f"{draft_path} already exists; refusing to overwrite a draft")
    if not CHAIN_ID_RE.fullmatch(args.chain_id):
        raise CliError("--chain-id must be 1 to 64 characters of [A-Za-z0-9._-], starting alphanumeric")
    members = [_pair(m, "--member", 1) for m in args.member]
    accounts = [_pair(a, "--account", None) for a in args.account]
    if len(members) > MAX_MEMBERS:
        raise CliError(f"at most {MAX_MEMBERS} committee members")
    if sum(n for _, n in accounts) > MAX_SAFE_INT:
        raise CliError("the total genesis allocation must be at most 2^53-1")
    numerator, _, denominator = args.threshold.partition("/")
    try:
        threshold = (int(numerator), int(denominator))
    except ValueError:
        raise CliError(f"--threshold {args.threshold!r} must be N/D, e.g. 2/3") from None
    genesis = Genesis(
        chain_id=args.chain_id, genesis_time=int(time.time() * 1000), consensus=args.consensus, validators=(),
        allocations=tuple(accounts),
        governance=GenesisGovernance(tuple(members), *threshold, lifetime=args.lifetime) if members else None)
    data = genesis.to_json()
    if genesis.governance is not None:
        try:  # the governance rules (weights, threshold) are checked now, not at finalize
            GenesisGovernance.from_json(data["governance"])
        except Rejected as exc:
            raise CliError(exc.message) from None
    _write(draft_path, {"genesis": data, "peers": {}})
    print(f"wrote the draft {draft_path}; add validators with `ledgerd genesis add-validator`", file=sys.stderr)
    return 0


def cmd_add_validator(args: argparse.Namespace) -> int:
    draft_path = Path(args.draft)
    draft = _load_draft(draft_path)
    try:
        info = json.loads(args.info)
    except ValueError as exc:
        raise CliError(f"--info is not the JSON line `ledgerd genesis node-info` printed: {exc}") from None
    if not isinstance(info, dict) or set(info) != {"name", "node_id", "p2p_url"} \
            or not all(isinstance(v, str) for v in info.values()):
        raise CliError("--info must be the JSON line `ledgerd genesis node-info` printed: {name, node_id, p2p_url}")
    node_id = _address(info["node_id"], "node_id")
    url = _p2p_url(info["p2p_url"])
    validators: list[dict[str, Any]] = draft["genesis"]["validators"]
    if any(v.get("node_id") == node_id for v in validators):
        raise CliError(f"node {node_id[:16]}… is already a validator in {draft_path}")
    if any(v.get("name") == info["name"] for v in validators):
        raise CliError(f"a validator named {info['name']!r} is already in {draft_path}")
    validators.append({"node_id": node_id, "name": info["name"]})
    draft["peers"][node_id] = url
    _write(draft_path, draft)
    print(f"{len(validators)} validator(s) in {draft_path}", file=sys.stderr)
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    draft = _load_draft(Path(args.draft))
    try:
        genesis = Genesis.from_json(draft["genesis"])
    except Rejected as exc:
        raise CliError(exc.message) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror}") from None
    for name in (GENESIS_FILE, PEERS_FILE):
        if (out / name).exists():
            raise CliError(f"{out / name} already exists; refusing to overwrite it")
    genesis.save(out / GENESIS_FILE)
    _write(out / PEERS_FILE, draft["peers"])
    print(genesis.hash())
    print(f"wrote {out / GENESIS_FILE} and {out / PEERS_FILE}; every institution checks the hash above "
          "before starting (`ledgerd genesis hash`)", file=sys.stderr)
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    try:
        print(Genesis.load(Path(args.file)).hash())
    except Rejected as exc:
        raise CliError(exc.message) from None
    return 0


def cmd_node_home(args: argparse.Namespace) -> int:
    home = Path(args.home)
    try:
        key = keys.PrivateKey.load(home / NODE_KEY_FILE)
        genesis = Genesis.load(Path(args.genesis))
    except Rejected as exc:
        raise CliError(exc.message) from None
    if args.expect_hash and genesis.hash() != args.expect_hash.strip().lower():
        raise CliError(f"the genesis hash is {genesis.hash()}, not the expected {args.expect_hash}: "
                       "do not start; ask the coordinator")
    if key.address not in genesis.validator_ids:
        raise CliError(f"this node ({key.address[:16]}…) is not a validator of {args.genesis}")
    peers_raw = _read_json(Path(args.peers), "the peers file")
    if not isinstance(peers_raw, dict) or not all(isinstance(v, str) for v in peers_raw.values()):
        raise CliError(f"{args.peers} is not a peers file written by `ledgerd genesis finalize`")
    peers = {_address(k, "peer id"): _p2p_url(v) for k, v in peers_raw.items() if k != key.address}
    missing = set(genesis.validator_ids) - set(peers) - {key.address}
    if missing:
        raise CliError(f"{args.peers} has no URL for validator {sorted(missing)[0][:16]}…")
    own_url = peers_raw.get(key.address)
    mine = urlsplit(_p2p_url(own_url) if own_url is not None else "")
    values: dict[str, Any] = {
        "home": home, "consensus": genesis.consensus, "node_key_file": NODE_KEY_FILE,
        "genesis_file": GENESIS_FILE, "data_dir": "data", "peers": peers,
        "p2p_host": args.p2p_host, "p2p_port": args.p2p_port if args.p2p_port is not None else (mine.port or 9001),
        "rest_host": args.rest_host, "rest_port": args.rest_port,
    }
    if args.allow_plaintext:
        values["p2p_allow_plaintext"] = True
    try:
        config = NodeConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise CliError(f"invalid settings: {where}: {first['msg']}") from None
    if (home / GENESIS_FILE).exists() and Genesis.load(home / GENESIS_FILE).hash() != genesis.hash():
        raise CliError(f"{home / GENESIS_FILE} holds another genesis; refusing to overwrite it")
    try:
        genesis.save(home / GENESIS_FILE)
        save_config(config, home)
    except (OSError, ConfigError) as exc:
        raise CliError(f"cannot write the node home {home}: {exc}") from None
    print(genesis.hash())
    print(f"node home {home} ready for node {key.address[:16]}…; start it with `ledgerd start --home {home}`",
          file=sys.stderr)
    return 0


# --- the parser ---------------------------------------------------------------------------------


def add_genesis_parser(sub: Any) -> None:
    """Register `genesis` under the `ledgerd` subcommands `sub` (an argparse subparsers action)."""
    p = sub.add_parser("genesis", help="the multi-institution genesis ceremony (keys never leave their host)",
                       description="Start a chain whose validators run at different institutions: each makes "
                                   "its node key at home and shares only its node id and p2p URL; a "
                                   "coordinator assembles and finalizes the genesis; everyone checks its hash.")
    p.set_defaults(func=_usage(p, "choose a genesis command: node-info, init, add-validator, finalize, "
                                  "node-home or hash"))
    g = p.add_subparsers(dest="genesis_command", metavar="<genesis command>", title="genesis commands")

    c = g.add_parser("node-info", help="make this node's key once (never overwritten) and print its id and URL")
    c.add_argument("--home", required=True, metavar="DIR", help="the node home (created if missing)")
    c.add_argument("--p2p-url", required=True, metavar="URL", help="how peers reach this node: wss://HOST:PORT")
    c.add_argument("--name", required=True, help="the validator's name in the genesis (e.g. the institution)")
    c.set_defaults(func=cmd_node_info)

    c = g.add_parser("init", help="(coordinator) start a draft genesis")
    c.add_argument("--draft", required=True, metavar="FILE", help="the draft to create")
    c.add_argument("--chain-id", required=True)
    c.add_argument("--consensus", choices=ENGINES, default="pbft")
    c.add_argument("--member", action="append", default=[], metavar="ADDR[=WEIGHT]",
                   help="a governance committee member (repeat; none: governance disabled)")
    c.add_argument("--threshold", default=f"{DEFAULT_THRESHOLD[0]}/{DEFAULT_THRESHOLD[1]}", metavar="N/D",
                   help="committee threshold, of the total weight (default 2/3)")
    c.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME, metavar="BLOCKS",
                   help="how many blocks a proposal takes votes (default %(default)s)")
    c.add_argument("--account", action="append", default=[], metavar="ADDR=AMOUNT",
                   help="an initial LDG balance (repeat)")
    c.set_defaults(func=cmd_init)

    c = g.add_parser("add-validator", help="(coordinator) add a validator from its node-info line")
    c.add_argument("--draft", required=True, metavar="FILE")
    c.add_argument("--info", required=True, metavar="JSON", help="the line `genesis node-info` printed")
    c.set_defaults(func=cmd_add_validator)

    c = g.add_parser("finalize", help="(coordinator) write genesis.json and peers.json; print the hash")
    c.add_argument("--draft", required=True, metavar="FILE")
    c.add_argument("--out", required=True, metavar="DIR")
    c.set_defaults(func=cmd_finalize)

    c = g.add_parser("node-home", help="write this node's config and genesis around its own key")
    c.add_argument("--home", required=True, metavar="DIR", help="the home `genesis node-info` made")
    c.add_argument("--genesis", required=True, metavar="FILE")
    c.add_argument("--peers", required=True, metavar="FILE", help="peers.json from `genesis finalize`")
    c.add_argument("--expect-hash", metavar="HASH", help="refuse unless the genesis has this hash")
    c.add_argument("--p2p-host", default="0.0.0.0", help="p2p bind address (default %(default)s)")
    c.add_argument("--p2p-port", type=int, help="p2p port (default: the port of this node's own URL)")
    c.add_argument("--rest-host", default="127.0.0.1", help="REST bind address (default %(default)s)")
    c.add_argument("--rest-port", type=int, default=8001, help="REST port (default %(default)s)")
    c.add_argument("--allow-plaintext", action="store_true",
                   help="allow ws:// peers and serve ws:// (p2p_allow_plaintext; loopback tests only)")
    c.set_defaults(func=cmd_node_home)

    c = g.add_parser("hash", help="print the hash of a genesis file (compare it with the coordinator's)")
    c.add_argument("file", metavar="FILE")
    c.set_defaults(func=cmd_hash)
