"""`ledgerd gov`: propose, vote on and show governance proposals.

    ledgerd gov propose ACTION [--account A] [--weight W] ... --key FILE [--node URL] [--wait]
    ledgerd gov vote ID --approve|--reject --key FILE [--node URL] [--wait]
    ledgerd gov show [ID] [--node URL]

One `propose` subcommand per entry of `ledger.governance.ACTIONS`, its options made from the
action's arguments, so a new action needs no CLI code unless one of its arguments is of a new kind.
Proposals and votes are ordinary signed transactions (`propose`, `vote`); the key must be a
committee member's (`DIR/committee/memberK.pem` of a testnet).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cli.args import int_in, node_url
from cli.client import LedgerClient, RequestFailed
from cli.errors import CliError
from ledger import governance, keys, valset
from ledger.errors import Rejected
from ledger.tx import MAX_SAFE_INT, Payload, Propose, Transaction, Vote, sign_tx

DEFAULT_NODE_URL = "http://127.0.0.1:8001"

# How each argument kind reads on the command line: (argparse type, metavar, help).
_INT_KINDS = frozenset({"weight", "numerator", "denominator", "blocks"})
_HELP = MappingProxyType({
    "account": ("A", "account address (64 hex)"),
    "weight": ("W", f"voting weight, 1..{governance.MAX_WEIGHT}"),
    "numerator": ("N", "threshold numerator: passes at numerator/denominator of the total weight"),
    "denominator": ("D", "threshold denominator"),
    "blocks": ("B", "how many blocks a new proposal takes votes"),
    "role": ("ROLE", " | ".join(governance.ROLES)),
    "accounts": ("POLICY", "who may transact: " + " | ".join(governance.ACCOUNT_POLICIES)),
    "issue": ("POLICY", "who may issue assets: " + " | ".join(governance.ISSUE_POLICIES)),
    "asset": ("S", "asset symbol"),
    "node_id": ("ID", "a node id (64 hex: the node's public key; `ledgerd status` shows it)"),
    "p2p_url": ("URL", "the node's p2p URL as its peers dial it (ws://host:port or wss://host:port)"),
    "name": ("NAME", "the validator's name (shown in status)"),
})
# Arguments the CLI makes itself: a rotation's new id and proof come from the new key's file.
_ROTATE = "rotate-validator-key"
_FROM_NEW_KEY = frozenset({"new_node_id", "proof"})


def _arg_type(name: str) -> Callable[[str], Any]:
    kind = governance.ARG_KINDS[name]

    def parse(text: str) -> Any:
        value: Any = text
        if name in _INT_KINDS:
            try:
                value = int(text, 10)
            except ValueError:
                raise argparse.ArgumentTypeError(f"--{name} must be an integer, got {text!r}") from None
        elif name in ("account", "node_id"):
            value = text.strip().lower()
        try:
            return kind(value, f"--{name}")
        except Rejected as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
    return parse


def _proposal_id(text: str) -> str:
    value = text.strip().lower()
    if not keys.is_hex(value, 64):
        raise argparse.ArgumentTypeError(f"a proposal id is 64 hex characters (its transaction hash), got {text!r}")
    return value


def _add_node(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", type=node_url, default=os.environ.get("LEDGERD_NODE", DEFAULT_NODE_URL),
                   metavar="URL", help=f"the node's REST URL (default: $LEDGERD_NODE or {DEFAULT_NODE_URL})")


def _add_signing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, metavar="FILE", help="a committee member's key file (PKCS#8 PEM)")
    _add_node(p)
    p.add_argument("--wait", action="store_true", help="wait until committed and print the proposal's status")
    p.add_argument("--timeout", type=int_in(1, 3600, "--timeout"), metavar="S",
                   help="with --wait: seconds to wait (default: the node's limit)")
    p.add_argument("--nonce", type=int_in(0, MAX_SAFE_INT, "--nonce"), metavar="N",
                   help="sender nonce (default: the account's next nonce, from the node)")
    p.add_argument("--chain-id", metavar="ID", help="chain id (default: the node's)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the signed transaction as JSON instead of submitting it")


def add_gov_parser(sub: Any) -> None:
    """Register `gov` under the `ledgerd` subcommands `sub` (an argparse subparsers action)."""
    p = sub.add_parser("gov", help="committee governance: propose, vote, show",
                       description="Propose rule changes (freezes, roles, policy, the committee itself), vote "
                                   "on them with a committee member's key, and show the committee and "
                                   "proposals. A proposal executes in the block where approving weight "
                                   "reaches the threshold.")
    p.set_defaults(func=_usage(p, "choose a gov command: propose, vote or show"))
    gov_sub = p.add_subparsers(dest="gov_command", metavar="<gov command>", title="gov commands")

    prop = gov_sub.add_parser("propose", help="propose an action (prints the proposal id)",
                              description="Submit a proposal signed by a committee member; proposing counts "
                                          "as approving. Actions: " + ", ".join(governance.ACTIONS) + ".")
    prop.set_defaults(func=_usage(prop, "choose an action: " + ", ".join(governance.ACTIONS)))
    actions = prop.add_subparsers(dest="action", metavar="<action>", title="actions")
    for action in governance.ACTIONS.values():
        a = actions.add_parser(action.name, help=action.summary, description=action.summary + ".")
        for name in (*action.required, *action.optional):
            if action.name == _ROTATE and name in _FROM_NEW_KEY:
                continue
            metavar, text = _HELP.get(name, (name.upper(), name))
            a.add_argument(f"--{name.replace('_', '-')}", dest=f"arg_{name}", required=name in action.required,
                           type=_arg_type(name), metavar=metavar, help=text)
        if action.name == _ROTATE:
            a.add_argument("--new-key", required=True, metavar="FILE",
                           help="the new node key (PKCS#8 PEM); it signs the rotation to prove its holder asks")
        _add_signing(a)
        a.set_defaults(func=cmd_propose)

    v = gov_sub.add_parser("vote", help="vote on a proposal",
                           description="Vote once on an open proposal with a committee member's key.")
    v.add_argument("proposal", type=_proposal_id, metavar="ID", help="the proposal id")
    choice = v.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", dest="approve", action="store_true", help="vote for it")
    choice.add_argument("--reject", dest="approve", action="store_false", help="vote against it")
    _add_signing(v)
    v.set_defaults(func=cmd_vote)

    s = gov_sub.add_parser("show", help="show the committee and open proposals, or one proposal",
                           description="Without ID: the committee, policy, role holders and open proposals. "
                                       "With ID: that proposal, its votes, status and effective height.")
    s.add_argument("proposal", nargs="?", type=_proposal_id, metavar="ID", help="a proposal id")
    _add_node(s)
    s.set_defaults(func=cmd_show)


def _usage(parser: argparse.ArgumentParser, message: str) -> Callable[[argparse.Namespace], int]:
    def fail(args: argparse.Namespace) -> int:
        print(f"{parser.prog}: error: {message} (see '{parser.prog} --help')", file=sys.stderr)
        return 2
    return fail


def _load_key(path: str) -> keys.PrivateKey:
    try:
        return keys.PrivateKey.load(Path(path))
    except Rejected as exc:
        raise CliError(exc.message) from None


def _sign(args: argparse.Namespace, payload: Payload) -> tuple[LedgerClient, Transaction]:
    key = _load_key(args.key)
    client = LedgerClient(args.node)
    chain_id = args.chain_id or str(client.status()["chain_id"])
    nonce = args.nonce if args.nonce is not None else int(client.account(key.address)["nonce"])
    return client, sign_tx(key, chain_id, nonce, payload)


def _submit(args: argparse.Namespace, client: LedgerClient, tx: Transaction) -> dict[str, Any]:
    result = client.submit(tx.to_json(), wait=args.wait, wait_timeout_s=args.timeout)
    if result.get("status") == "failed":
        outcome = result.get("result") or {}
        raise CliError(f"transaction {tx.hash} was committed but failed: {outcome.get('code')}: "
                       f"{outcome.get('message', '')}".rstrip(": "))
    return result


def _proposal(client: LedgerClient, proposal_id: str) -> dict[str, Any]:
    result: dict[str, Any] = client.request("GET", f"/v1/governance/proposals/{proposal_id}")
    return result


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def cmd_propose(args: argparse.Namespace) -> int:
    action = governance.ACTIONS[args.action]
    raw = {name: getattr(args, f"arg_{name}", None) for name in (*action.required, *action.optional)
           if getattr(args, f"arg_{name}", None) is not None}
    client = LedgerClient(args.node)
    if action.name == _ROTATE:
        new_key = _load_key(args.new_key)
        chain_id = args.chain_id or str(client.status()["chain_id"])
        raw["new_node_id"] = new_key.address
        raw["proof"] = new_key.sign(valset.rotation_message(chain_id, str(raw["node_id"]), new_key.address)).hex()
    if not raw and action.optional:
        raise CliError(f"{action.name} needs at least one of "
                       + ", ".join(f"--{name}" for name in action.optional))
    try:
        payload = Propose(*governance.decode_action(action.name, raw))
    except Rejected as exc:
        raise CliError(exc.message) from None
    client, tx = _sign(args, payload)
    if args.dry_run:
        if action.name in valset.VALSET_ACTIONS:
            _print({"validator_set_after": _preview(client, action.name, raw), "tx": tx.to_json()})
        else:
            _print(tx.to_json())
        print(f"not submitted (--dry-run); the proposal id would be {tx.hash}", file=sys.stderr)
        return 0
    result = _submit(args, client, tx)
    if not args.wait:
        _print({"proposal": tx.hash, "status": "pending", "tx": result})
        return 0
    _print({**_proposal(client, tx.hash), "proposal": tx.hash, "tx": result})
    return 0


def _preview(client: LedgerClient, action: str, args: dict[str, Any]) -> dict[str, Any]:
    """The set after `action`, from the node's next set: n, f and the quorum, as the chain's engine
    counts them (PBFT: n >= 3f + 1; Raft: a majority)."""
    status = client.status()
    current = [v["node_id"] for v in status.get("next_validators") or status["validators"]]
    node_id = str(args["node_id"])
    if action == "add-validator":
        after = [*current, node_id] if node_id not in current else current
    elif action == "remove-validator":
        after = [v for v in current if v != node_id]
    else:
        after = [str(args["new_node_id"]) if v == node_id else v for v in current]
    figures = valset.figures(len(after), str(status.get("consensus", "pbft")))
    return {**figures, "validators": after,
            "summary": f"after this change n={figures['n']}, f={figures['f']}, quorum {figures['quorum']}"}


def cmd_vote(args: argparse.Namespace) -> int:
    client, tx = _sign(args, Vote(args.proposal, args.approve))
    if args.dry_run:
        _print(tx.to_json())
        print(f"not submitted (--dry-run); its hash is {tx.hash}", file=sys.stderr)
        return 0
    result = _submit(args, client, tx)
    out: dict[str, Any] = {"proposal": args.proposal, "approve": args.approve, "vote": tx.hash, "tx": result}
    if args.wait:
        view = _proposal(client, args.proposal)
        out.update(status=view["status"], executed_height=view.get("executed_height"), votes=view["votes"])
    _print(out)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    client = LedgerClient(args.node)
    if args.proposal is not None:
        try:
            _print(_proposal(client, args.proposal))
        except RequestFailed as exc:
            if exc.code == "unknown_proposal":
                raise CliError(f"no proposal {args.proposal} on this chain") from None
            raise
        return 0
    overview: dict[str, Any] = client.request("GET", "/v1/governance")
    listing = client.request("GET", "/v1/governance/proposals?status=open&limit=100")
    _print({**overview, "open_proposals": listing["proposals"]})
    return 0
