"""`ledgerd`: the one command-line entry point (console script `ledgerd = cli.main:main`).

Exit codes: 0 success, 1 runtime failure, 2 usage error. Every error is one line on stderr; a Python
traceback reaches the terminal only with LEDGERD_DEBUG=1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from cli.args import int_in, node_url
from cli.client import ClientError, LedgerClient, RequestFailed, normalize_url
from cli.errors import CliError
from ledger import keys
from ledger.errors import Rejected
from ledger.tx import ASSET_RE, MAX_RECORD_KEY_BYTES, MAX_RECORD_VALUE_BYTES, MAX_SAFE_INT, Payload

PROG = "ledgerd"
DEFAULT_NODE_URL = "http://127.0.0.1:8001"
DEFAULT_LOCALNET_DIR = "localnet-data"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line: `ledgerd tx transfer: error: ... (see --help)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated long options (`--nod` for `--node`): an abbreviation that is unique today
        # becomes ambiguous, or silently means another option, when an option is added. Subparsers
        # are made by this class too, so every command refuses them.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --- argument types: a bad value is a usage error (exit 2), caught before anything is sent -------


def _address(text: str) -> str:
    value = text.strip().lower()
    if not keys.is_address(value):
        raise argparse.ArgumentTypeError(f"an address is 64 hex characters, got {text!r}")
    return value


def _asset(text: str) -> str:
    if not ASSET_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"an asset symbol is 2-12 of A-Z and 0-9, starting with a letter; got {text!r}")
    return text


def _utf8_max(limit: int, what: str, allow_empty: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise argparse.ArgumentTypeError(f"{what} is not valid UTF-8") from None
        if size > limit or (size == 0 and not allow_empty):
            low = 0 if allow_empty else 1
            raise argparse.ArgumentTypeError(f"{what} must be {low} to {limit} bytes of UTF-8")
        return text
    return parse


def _hosts(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",")]
    if any(not h for h in hosts):
        raise argparse.ArgumentTypeError(f"--hosts is a comma-separated list of host names, got {text!r}")
    return hosts


AMOUNT = int_in(1, MAX_SAFE_INT, "the amount")
PORT = int_in(0, 65535, "a port")


# --- commands ----------------------------------------------------------------------------------------


def cmd_keys_new(args: argparse.Namespace) -> int:
    key = keys.PrivateKey.generate()
    path = Path(args.out)
    try:
        key.save(path)
    except FileExistsError:
        raise CliError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    print(key.address)
    print(f"wrote {path} (PKCS#8 PEM, mode 0600); the line above is its address", file=sys.stderr)
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    print(_load_key(args.file).address)
    return 0


def _load_key(path: str) -> keys.PrivateKey:
    try:
        return keys.PrivateKey.load(Path(path))
    except Rejected as exc:
        raise CliError(exc.message) from None


def cmd_testnet(args: argparse.Namespace) -> int:
    from cli.testnet import make_testnet

    net = make_testnet(Path(args.out), validators=args.validators, consensus=args.consensus,
                       chain_id=args.chain_id, accounts=args.accounts, base_port=args.base_port,
                       hosts=args.hosts, committee=args.committee, proposal_lifetime=args.proposal_lifetime,
                       observers=args.observers)
    genesis = net.genesis
    print(f"wrote a {len(net.node_homes)}-validator {genesis.consensus} testnet, chain {genesis.chain_id}:")
    for home, url in zip(net.node_homes, net.rest_urls, strict=True):
        print(f"  {home}  REST {url}")
    accounts = net.out_dir / "accounts"
    print(f"  {accounts}  {len(net.account_files)} funded account keys (index.json lists them)")
    if net.member_files:
        print(f"  {net.out_dir / 'committee'}  {len(net.member_files)} committee member keys (index.json lists them)")
    for home in net.observer_homes:
        print(f"  {home}  observer (follows the chain, does not vote)")
    print(f"start a node with: {PROG} start --home {net.node_homes[0]}")
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    from cli.join import join

    joined = join(Path(args.genesis), args.peer, Path(args.out), args.rest_port, args.p2p_port,
                  allow_plaintext=args.allow_plaintext)
    print(f"wrote an observer home in {joined.home}")
    print(f"  node id  {joined.node_id}")
    print(f"  REST     {joined.rest_url}")
    print(f"  p2p      {joined.p2p_url}  (the URL to give the committee for add-validator, as peers reach it)")
    print(f"start it with: {PROG} start --home {joined.home}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from cli.start import run_node

    overrides = {
        "rest_host": args.rest_host, "rest_port": args.rest_port, "p2p_host": args.p2p_host,
        "p2p_port": args.p2p_port, "log_format": args.log_format, "log_level": args.log_level,
        "data_dir": args.data_dir,
    }
    return asyncio.run(run_node(Path(args.home), {k: v for k, v in overrides.items() if v is not None}))


def cmd_localnet(args: argparse.Namespace) -> int:
    from cli.localnet import run_localnet

    return run_localnet(Path(args.dir), validators=args.validators, consensus=args.consensus,
                        base_port=args.base_port, accounts=args.accounts, ready_timeout_s=args.ready_timeout)


def cmd_status(args: argparse.Namespace) -> int:
    from node.liveness import explain

    status = LedgerClient(args.node).status()
    if args.peer_arg:
        node_id, url = status.get("node_id"), status.get("p2p_url")
        if not isinstance(node_id, str) or not isinstance(url, str) or not url:
            raise CliError(f"the node at {args.node} reports no p2p URL (a chain of one validator and no "
                           "committee can never change its set, so it runs no p2p and no node can follow it)")
        print(f"{node_id}={url}")
        return 0
    print(json.dumps(status, indent=2, sort_keys=True))
    health = status.get("consensus_health")
    if isinstance(health, str) and health != "ok":
        # The JSON is for scripts; a person should not have to find the one field that matters.
        print(f"{PROG}: warning: {explain(status)}", file=sys.stderr)
    return 0


def _urls(text: str) -> list[str]:
    try:
        return [normalize_url(u) for u in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pids(text: str) -> list[int]:
    try:
        return [int(p, 10) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pids is a comma-separated list of PIDs, got {text!r}") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from cli.bench.run import run_bench
    from cli.bench.setup import BenchError

    try:
        return run_bench(args.nodes, None if args.max else args.rate, args.duration, args.accounts,
                         Path(args.keys), args.pids, args.presign, args.window, args.down,
                         args.fresh_accounts)
    except BenchError as exc:
        raise CliError(str(exc)) from None


def _payload(args: argparse.Namespace) -> Payload:
    from ledger.tx import Issue, Record, Transfer

    if args.tx_type == "transfer":
        return Transfer(args.to, args.asset, args.amount)
    if args.tx_type == "issue":
        return Issue(args.asset, args.supply)
    return Record(args.record_key, args.value)


def cmd_tx(args: argparse.Namespace) -> int:
    from ledger.tx import sign_tx

    key = _load_key(args.key)
    client = LedgerClient(args.node)
    # Fetched only when not given, so --dry-run with both works offline.
    chain_id = args.chain_id or str(client.status()["chain_id"])
    nonce = args.nonce if args.nonce is not None else int(client.account(key.address)["nonce"])
    tx = sign_tx(key, chain_id, nonce, _payload(args))
    if args.dry_run:
        print(json.dumps(tx.to_json(), indent=2, sort_keys=True))
        print(f"not submitted (--dry-run); its hash is {tx.hash}", file=sys.stderr)
        return 0
    result = client.submit(tx.to_json(), wait=args.wait, wait_timeout_s=args.timeout)
    print(json.dumps(result, indent=2, sort_keys=True))
    if result.get("status") == "failed":
        outcome = result.get("result") or {}
        raise CliError(f"transaction {tx.hash} was committed but failed: {outcome.get('code')}: "
                       f"{outcome.get('message', '')}".rstrip(": "))
    return 0


# --- the parser --------------------------------------------------------------------------------------


def _add_node_url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", type=node_url, default=os.environ.get("LEDGERD_NODE", DEFAULT_NODE_URL),
                   metavar="URL", help=f"the node's REST URL (default: $LEDGERD_NODE or {DEFAULT_NODE_URL})")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("ledgerd")
    except PackageNotFoundError:
        ver = "unknown"
    parser = _Parser(
        prog=PROG,
        description="ledgerd: a permissioned multi-node ledger.\n"
                    "Create a local chain with `ledgerd localnet` (or `ledgerd testnet` + `ledgerd start`),\n"
                    "then send transactions with `ledgerd tx`.",
        epilog="first steps:\n"
               "  ledgerd localnet --validators 1 --dir example-data   # a one-node chain in ./example-data\n"
               "  ledgerd status                           # in another terminal\n"
               "  ledgerd tx transfer --key example-data/accounts/account0.pem --amount 10 --wait \\\n"
               "      --to $(ledgerd keys show example-data/accounts/account1.pem)\n\n"
               "Run `ledgerd <command> --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {ver}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")

    p = sub.add_parser("testnet", help="write the node homes and funded account keys of a new chain",
                       description="Write DIR/node0..N-1 (node key, config.toml, genesis.json each) "
                                   "and DIR/accounts/ (funded account keys). Node k serves REST on P+k "
                                   "and p2p on P+1000+k.")
    p.add_argument("--validators", type=int_in(1, 100, "--validators"), default=4, metavar="N",
                   help="number of validator nodes (default 4)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create (must be new or empty)")
    p.add_argument("--consensus", choices=("pbft", "raft"), default="pbft",
                   help="consensus engine (default pbft)")
    p.add_argument("--chain-id", default="ledger-local", metavar="ID", help="chain id (default ledger-local)")
    p.add_argument("--accounts", type=int_in(0, 100_000, "--accounts"), default=4, metavar="M",
                   help="funded account keys to write (default 4)")
    p.add_argument("--base-port", type=int_in(1, 64535, "--base-port"), default=8001, metavar="P",
                   help="node k: REST on P+k, p2p on P+1000+k (default 8001)")
    p.add_argument("--hosts", type=_hosts, metavar="h0,h1,..",
                   help="host name of each node, comma-separated (default 127.0.0.1 for all)")
    p.add_argument("--committee", type=int_in(0, 64, "--committee"), default=3, metavar="K",
                   help="governance committee members to write, weight 1 each, 2/3 threshold (default 3; "
                        "0: no committee, governance disabled)")
    p.add_argument("--proposal-lifetime", type=int_in(1, 1_000_000, "--proposal-lifetime"), default=1000,
                   metavar="B", help="blocks a governance proposal takes votes (default 1000)")
    p.add_argument("--observers", type=int_in(0, 100, "--observers"), default=0, metavar="K",
                   help="also write DIR/observer0..K-1: non-voting nodes, REST on P+100+k, p2p on P+1100+k")
    p.set_defaults(func=cmd_testnet)

    p = sub.add_parser("join", help="write the home of an observer of an existing chain (a fresh node key)",
                       description="Write DIR with a fresh node key, the chain's genesis file and a config "
                                   "that follows the given peers. `ledgerd start --home DIR` runs it as an "
                                   "observer until the committee makes it a validator (add-validator).")
    p.add_argument("--genesis", required=True, metavar="FILE", help="the chain's genesis file")
    p.add_argument("--peer", action="append", required=True, metavar="ID=URL",
                   help="a validator to follow: its node id and p2p URL (repeat for each)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create (must be new or empty)")
    p.add_argument("--rest-port", type=int_in(0, 65535, "--rest-port"), default=8101, metavar="P",
                   help="REST port (default 8101)")
    p.add_argument("--p2p-port", type=int_in(0, 65535, "--p2p-port"), default=9101, metavar="P",
                   help="p2p port (default 9101)")
    p.add_argument("--allow-plaintext", action="store_true",
                   help="allow ws:// peers and serve ws:// (p2p_allow_plaintext; loopback tests only)")
    p.set_defaults(func=cmd_join)

    p = sub.add_parser("start", help="run one node in the foreground (Ctrl-C stops it)",
                       description="Run the node whose home is DIR (written by `ledgerd testnet`) until "
                                   "SIGINT or SIGTERM. Flags override config.toml and LEDGERD_* "
                                   "environment variables.")
    p.add_argument("--home", required=True, metavar="DIR",
                   help="the node's home directory, e.g. localnet-data/node0")
    p.add_argument("--rest-host", metavar="HOST", help="REST bind address")
    p.add_argument("--rest-port", type=PORT, metavar="PORT", help="REST port (0: any free port)")
    p.add_argument("--p2p-host", metavar="HOST", help="peer-to-peer bind address")
    p.add_argument("--p2p-port", type=PORT, metavar="PORT", help="peer-to-peer port (0: any free port)")
    p.add_argument("--data-dir", metavar="DIR", help="database directory (relative to the home)")
    p.add_argument("--log-format", choices=("plain", "json"), help="log line format (default plain)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="log level (default info)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("localnet", help="create (first time) and run a local cluster; Ctrl-C stops it",
                       description="If DIR holds no testnet yet, write one (like `ledgerd testnet`); then "
                                   "start every node as a child process, wait until each answers, and print "
                                   "its URL. Ctrl-C or SIGTERM stops them all. Node logs go to "
                                   "DIR/nodeK/node.log. To restart node K (stopped or running), create "
                                   "the file DIR/nodeK/restart; a node started by hand with `ledgerd "
                                   "start` is not localnet's, and Ctrl-C does not stop it.")
    # No defaults here: localnet must tell "not given" (start DIR's chain as it is) from "given"
    # (DIR's chain must match, or localnet refuses rather than start a different chain).
    p.add_argument("--validators", type=int_in(1, 100, "--validators"), metavar="N",
                   help="validators of a new testnet (default 4); for an existing DIR it must match")
    p.add_argument("--consensus", choices=("pbft", "raft"),
                   help="consensus engine of a new testnet (default pbft); for an existing DIR it must match")
    p.add_argument("--dir", default=DEFAULT_LOCALNET_DIR, metavar="DIR",
                   help=f"testnet directory (default ./{DEFAULT_LOCALNET_DIR})")
    p.add_argument("--base-port", type=int_in(1, 64535, "--base-port"), default=8001, metavar="P",
                   help="ports of a new testnet: REST P+k, p2p P+1000+k (default 8001)")
    p.add_argument("--accounts", type=int_in(0, 100_000, "--accounts"), default=4, metavar="M",
                   help="funded accounts of a new testnet (default 4)")
    p.add_argument("--ready-timeout", type=int_in(1, 3600, "--ready-timeout"), default=60, metavar="S",
                   help="seconds to wait for every node to answer (default 60)")
    p.set_defaults(func=cmd_localnet)

    p = sub.add_parser("keys", help="create or show an Ed25519 key file",
                       description="Account and node keys are Ed25519 private keys in PKCS#8 PEM files "
                                   "(openssl-readable). An address is the hex public key.")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="<keys command>", title="keys commands")
    k = keys_sub.add_parser("new", help="generate a key, write it to FILE and print its address")
    k.add_argument("--out", required=True, metavar="FILE", help="file to create (never overwritten)")
    k.set_defaults(func=cmd_keys_new)
    k = keys_sub.add_parser("show", help="print the address of the key in FILE")
    k.add_argument("file", metavar="FILE",
                   help="a key file (PKCS#8 PEM) written by `ledgerd keys new`, or an account key "
                        "that `ledgerd testnet` or `ledgerd localnet` wrote into DIR/accounts/")
    k.set_defaults(func=cmd_keys_show)

    p = sub.add_parser("tx", help="build, sign and submit a transaction",
                       description="Build a transaction, sign it with --key and submit it to --node. The "
                                   "nonce and chain id are fetched from the node unless given. Prints the "
                                   "node's answer as JSON.")
    tx_sub = p.add_subparsers(dest="tx_type", metavar="<tx type>", title="transaction types")
    t_transfer = tx_sub.add_parser(
        "transfer", help="send an amount of an asset to an address",
        epilog="example: ledgerd tx transfer --key localnet-data/accounts/account0.pem --to <address> "
               "--amount 10 --wait")
    t_transfer.add_argument("--to", required=True, type=_address, metavar="ADDR", help="recipient address")
    t_transfer.add_argument("--asset", default="LDG", type=_asset, metavar="A",
                            help="asset symbol (default LDG)")
    t_transfer.add_argument("--amount", required=True, type=AMOUNT, metavar="N",
                            help="integer amount, 1..2^53-1")
    t_issue = tx_sub.add_parser(
        "issue", help="create a new asset; the whole supply goes to the sender",
        epilog="example: ledgerd tx issue --key localnet-data/accounts/account0.pem --asset GOLD "
               "--supply 1000 --wait")
    t_issue.add_argument("--asset", required=True, type=_asset, metavar="A",
                         help="new symbol, [A-Z][A-Z0-9]{1,11}")
    t_issue.add_argument("--supply", required=True, type=AMOUNT, metavar="N",
                         help="integer supply, 1..2^53-1")
    t_record = tx_sub.add_parser(
        "record", help="store a value under a key of the sender's account",
        epilog="example: ledgerd tx record --key localnet-data/accounts/account0.pem "
               "--record-key invoice-42 --value sha256:9f86d08... --wait")
    t_record.add_argument("--record-key", required=True, metavar="K",
                          type=_utf8_max(MAX_RECORD_KEY_BYTES, "the record key", False),
                          help=f"record key, 1 to {MAX_RECORD_KEY_BYTES} bytes")
    t_record.add_argument("--value", required=True, metavar="V",
                          type=_utf8_max(MAX_RECORD_VALUE_BYTES, "the value", True),
                          help=f"value, at most {MAX_RECORD_VALUE_BYTES} bytes (e.g. a document hash)")
    for t in (t_transfer, t_issue, t_record):
        t.add_argument("--key", required=True, metavar="FILE", help="the sender's key file (PKCS#8 PEM)")
        _add_node_url(t)
        t.add_argument("--wait", action="store_true", help="wait until the transaction is committed")
        t.add_argument("--timeout", type=int_in(1, 3600, "--timeout"), metavar="S",
                       help="with --wait: seconds to wait (default: the node's limit)")
        t.add_argument("--nonce", type=int_in(0, MAX_SAFE_INT, "--nonce"), metavar="N",
                       help="sender nonce (default: the account's next nonce, from the node)")
        t.add_argument("--chain-id", metavar="ID", help="chain id (default: the node's)")
        t.add_argument("--dry-run", action="store_true",
                       help="print the signed transaction as JSON instead of submitting it (with --nonce "
                            "and --chain-id it needs no node at all)")
        t.set_defaults(func=cmd_tx)

    p = sub.add_parser("bench", help="load-test a running cluster and report throughput and latency",
                       description="Fund --accounts fresh accounts from the funded keys in --keys, pre-sign "
                                   "the load, then submit it for --duration seconds (at --rate, or as fast "
                                   "as the cluster takes it with --max), spread over --nodes. First measures "
                                   "Ed25519 verifications per second on one core, and reports the "
                                   "setup's ceiling and the share of it reached. Prints a "
                                   "progress line, a table and one JSON line (the last line of stdout).")
    p.add_argument("--nodes", type=_urls, default=[DEFAULT_NODE_URL], metavar="URL,URL,..",
                   help=f"the nodes' REST URLs (default {DEFAULT_NODE_URL}); commits are followed on the first")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=int_in(1, 1_000_000, "--rate"), default=100, metavar="R",
                      help="open-loop: offer R tx/s (default 100); refusals count as dropped")
    mode.add_argument("--max", action="store_true",
                      help="closed-loop: send as fast as the cluster accepts; refusals are retried")
    p.add_argument("--duration", type=int_in(1, 3600, "--duration"), default=10, metavar="S",
                   help="seconds of sending (default 10)")
    p.add_argument("--accounts", type=int_in(1, 100_000, "--accounts"), default=200, metavar="K",
                   help="fresh sender accounts to spread the load over (default 200)")
    p.add_argument("--tx-type", choices=("transfer",), default="transfer", help="transaction type")
    p.add_argument("--keys", default=f"{DEFAULT_LOCALNET_DIR}/accounts", metavar="DIR",
                   help=f"funded account keys (default ./{DEFAULT_LOCALNET_DIR}/accounts)")
    p.add_argument("--pids", type=_pids, metavar="PID,PID,..",
                   help="the nodes' process ids, in --nodes order, for CPU and peak memory figures")
    p.add_argument("--presign", type=int_in(1, 10_000_000, "--presign"), metavar="N",
                   help="transactions to sign ahead (default rate*duration; with --max 8000*duration)")
    p.add_argument("--window", type=int_in(1, 1_000_000, "--window"), default=4000, metavar="W",
                   help="closed-loop: most transactions sent but not yet committed (default 4000); "
                        "keeps --max measuring throughput, not how deep the mempools can fill")
    p.add_argument("--down", type=int_in(0, 1024, "--down"), default=0, metavar="K",
                   help="stop the last K of --nodes (SIGTERM to their --pids) once the load is signed, "
                        "just before the clock starts, and send the load to the others: the cluster "
                        "measured with K validators down (default 0)")
    p.add_argument("--fresh-accounts", action="store_true",
                   help="send every transfer to an address never used before, so the state grows by one "
                        "account a transaction (default: transfers between the --accounts senders)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("status", help="show a node's status: node, chain, height, peers, consensus")
    _add_node_url(p)
    p.add_argument("--peer-arg", action="store_true",
                   help="print only the node's ID=URL (node id and p2p URL), the form `ledgerd join --peer` "
                        "and the [peers] table take")
    p.set_defaults(func=cmd_status)

    from cli.gov import add_gov_parser
    add_gov_parser(sub)
    from cli.proof import add_proof_parsers
    add_proof_parsers(sub)
    from cli.genesis import add_genesis_parser
    add_genesis_parser(sub)
    return parser


def _missing_command(args: argparse.Namespace) -> None:
    def usage_error(prog: str, message: str) -> NoReturn:
        print(f"{prog}: error: {message} (see '{prog} --help')", file=sys.stderr)
        sys.exit(2)

    if args.command is None:
        usage_error(PROG, "choose a command: testnet, join, start, localnet, genesis, keys, tx, gov, proof, "
                          "verify, status or bench")
    if args.command == "keys" and args.keys_command is None:
        usage_error(f"{PROG} keys", "choose a keys command: new or show")
    if args.command == "tx" and args.tx_type is None:
        usage_error(f"{PROG} tx", "choose a transaction type: transfer, issue or record")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _missing_command(args)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as exc:
        return _fail(str(exc))
    except RequestFailed as exc:
        if exc.code == "commit_timeout":
            return _fail(describe_commit_timeout(exc.body))
        return _fail(f"the node refused: {exc}")
    except ClientError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ledgerd status | head`): nothing more to say, and no error to say
        # it with. Point stdout at /dev/null so the interpreter's final flush is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE reports it in the shell
    except Exception as exc:  # every error leaves as one line; LEDGERD_DEBUG=1 shows where it came from
        described = _describe_known(exc)
        if os.environ.get("LEDGERD_DEBUG"):
            raise
        return _fail(described or f"unexpected {type(exc).__name__}: {exc} (LEDGERD_DEBUG=1 shows details)")


def describe_commit_timeout(body: dict[str, Any]) -> str:
    """The 504 of `--wait` in one true line: the node took the transaction but the chain did not commit
    it in time, and (from the node's view of consensus in the answer) why, e.g. "transaction ab12…
    accepted, not committed within 3 s; the chain has not committed for 40 s and only 2 of the 3
    validators needed are connected; ..." An older node's answer without that view says less."""
    from node.liveness import explain

    tx_hash = body.get("hash")
    waited = body.get("waited_s")
    line = f"transaction {tx_hash} accepted" if isinstance(tx_hash, str) else "the transaction was accepted"
    line += f", not committed within {waited:g} s" if isinstance(waited, (int, float)) else ", not committed in time"
    why = explain(body)
    if why:
        line += f"; {why}"
    else:
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str) and message:
            line += f" (the node said: {message})"
    health = body.get("consensus_health")
    if isinstance(health, str) and "validators needed" in health:
        line += ("; it can commit once enough validators are back (`ledgerd status` lists the peers "
                 "that are not connected)")
    else:
        line += "; it may still commit: `ledgerd status` shows the chain's state"
    return line


def _describe_known(exc: Exception) -> str | None:
    from node.config import ConfigError
    from storage import StorageError

    if isinstance(exc, (ConfigError, StorageError)):
        return str(exc)
    if isinstance(exc, Rejected):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return None


def _fail(line: str) -> int:
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return 1
