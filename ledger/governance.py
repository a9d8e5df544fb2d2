"""Governance: a committee that changes the chain's rules by signed proposals and votes.

Everything here is state-machine logic, pure and deterministic; it reads and writes the ledger
state through `GovState` (the block's `StateOverlay`), so every rule is evaluated against the state
in force at the block being executed and a replay from genesis always reaches the same result.

State keys (in the ledger's state namespace, next to accounts, assets and records):

    b"gc"                   committee {"members": {address: weight}, "numerator", "denominator",
                            "lifetime"}
    b"gp"                   policy {"accounts": open|allowlist, "issue": anyone|issuers,
                            "allowed": how many accounts are allow-listed}
    b"gr"                   role holders {role: [sorted addresses]} (at most MAX_ROLE_HOLDERS each)
    b"ga" + address(32)     account flags {"allowed": bool, "frozen": bool, "roles": [sorted]}
    b"gs" + asset symbol    asset flags {"frozen": bool}
    b"gq" + proposal id(32) the proposal, its votes and its status
    b"go"                   ids of the open proposals, oldest first (expiry scans only these)
    b"gn", b"gi" + seq(8)   how many proposals exist, and the id of the n-th (listing, newest first)
    b"gh" + height(8)       the proposals that closed at that height: the block's governance events

A chain whose genesis has no `governance` section has no committee: `propose` and `vote` fail with
`not_a_member`, the policy is open (anyone transacts, anyone issues), nothing can be frozen, and
none of the keys above exist (so such a chain's state and app hashes are what they always were).

Rules:
- Only members propose and vote, once per proposal; proposing counts as approving. A proposal's
  id is the hash of its `propose` transaction.
- Tallies use the committee in force when a vote is counted: approving weight W of total T passes
  when W * denominator >= numerator * T; the proposal is rejected as soon as the weight not yet
  against it cannot reach that. A passing proposal's action is checked again and applied in the
  same transaction (exactly once); if the state changed so that it no longer applies, the
  proposal is rejected with the reason. Changing the committee does not re-tally other open
  proposals: they settle at their next vote, or expire.
- A proposal made at height h with lifetime L takes votes in blocks h..h+L; at the start of block
  h+L+1 it expires (expiry is part of executing that block, so every node agrees on it).
- No self-lockout: the committee keeps at least one member, a member cannot be frozen (remove it
  first), the threshold is a fraction in (0, 1] of the total weight (so the members can always
  reach it), the allowlist policy needs an allow-listed account and the `issuers` policy an
  issuer, and the last such account cannot be denied or lose its role while that policy holds.
- Permissions: a frozen account can send nothing (it may still receive); under the `allowlist`
  policy only allow-listed accounts send transfers, issues and records (members may always send
  `propose` and `vote`; anyone may receive); under the `issuers` policy only holders of the
  `issuer` role issue assets; a frozen asset cannot be transferred at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from ledger import keys, valset
from ledger.errors import Rejected

MAX_MEMBERS = 64
MAX_WEIGHT = 1_000_000
MAX_DENOMINATOR = 1_000_000
MAX_LIFETIME = 1_000_000  # blocks
MAX_OPEN_PROPOSALS = 256
MAX_ROLE_HOLDERS = 1024  # per role; the role index is one record, read whole

ROLES = ("auditor", "issuer")
ACCOUNT_POLICIES = ("allowlist", "open")
ISSUE_POLICIES = ("anyone", "issuers")
STATUSES = ("open", "executed", "rejected", "expired")
GOVERNANCE_TX_TYPES = frozenset({"propose", "vote"})

COMMITTEE_KEY = b"gc"
POLICY_KEY = b"gp"
ROLES_KEY = b"gr"
OPEN_KEY = b"go"
COUNT_KEY = b"gn"

ArgValue = str | int
Args = Mapping[str, ArgValue]


def flags_key(address: str) -> bytes:
    return b"ga" + bytes.fromhex(address)


def asset_flags_key(symbol: str) -> bytes:
    return b"gs" + symbol.encode("ascii")


def proposal_key(proposal_id: str) -> bytes:
    return b"gq" + bytes.fromhex(proposal_id)


def seq_key(seq: int) -> bytes:
    return b"gi" + seq.to_bytes(8, "big")


def log_key(height: int) -> bytes:
    return b"gh" + height.to_bytes(8, "big")


class GovState(Protocol):
    """What governance reads and writes: parsed JSON values under state keys (None: absent)."""

    chain_id: str

    def gov_get(self, key: bytes) -> Any: ...

    def gov_put(self, key: bytes, value: Any) -> None: ...

    def asset_exists(self, symbol: str) -> bool: ...


def _invalid(message: str) -> Rejected:
    return Rejected("invalid_proposal", message)


# --- argument kinds: how each action argument is decoded -------------------------------------------

def _arg_account(value: Any, where: str) -> ArgValue:
    if not keys.is_address(value):
        raise _invalid(f"{where} must be an account address (64 lowercase hex characters)")
    return str(value)


def _bounded_int(low: int, high: int) -> Callable[[Any, str], ArgValue]:
    def check(value: Any, where: str) -> ArgValue:
        if type(value) is not int or not low <= value <= high:
            raise _invalid(f"{where} must be an integer from {low} to {high}")
        return value
    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, str], ArgValue]:
    def check(value: Any, where: str) -> ArgValue:
        if not isinstance(value, str) or value not in choices:
            raise _invalid(f"{where} must be one of {', '.join(choices)}")
        return value
    return check


def _arg_asset(value: Any, where: str) -> ArgValue:
    # The same alphabet as the transaction decoder's asset symbols (kept here so that this module
    # imports nothing of the transaction layer, which imports it).
    if not isinstance(value, str) or not 2 <= len(value) <= 12 or not value[0].isascii() \
            or not value[0].isupper() or not all(c.isascii() and (c.isupper() or c.isdigit()) for c in value):
        raise _invalid(f"{where} must be an asset symbol matching [A-Z][A-Z0-9]{{1,11}}")
    return value


def _arg_p2p_url(value: Any, where: str) -> ArgValue:
    if not isinstance(value, str) or not value.startswith(("ws://", "wss://")) \
            or not 8 <= len(value) <= valset.MAX_URL_CHARS or not value.isascii() or not value.isprintable() \
            or " " in value:
        raise _invalid(f"{where} must be a ws:// or wss:// URL of at most {valset.MAX_URL_CHARS} characters")
    return value


def _arg_name(value: Any, where: str) -> ArgValue:
    if not isinstance(value, str) or len(value) > valset.MAX_NAME_CHARS or not value.isprintable():
        raise _invalid(f"{where} must be printable text of at most {valset.MAX_NAME_CHARS} characters")
    return value


def _arg_signature(value: Any, where: str) -> ArgValue:
    if not isinstance(value, str) or not keys.is_hex(value, 128):
        raise _invalid(f"{where} must be an Ed25519 signature (128 lowercase hex characters)")
    return value


def _arg_node_id(value: Any, where: str) -> ArgValue:
    if not keys.is_address(value):
        raise _invalid(f"{where} must be a node id (64 lowercase hex characters: an Ed25519 public key)")
    return str(value)


ARG_KINDS: Mapping[str, Callable[[Any, str], ArgValue]] = MappingProxyType({
    "account": _arg_account,
    "node_id": _arg_node_id,
    "new_node_id": _arg_node_id,
    "p2p_url": _arg_p2p_url,
    "name": _arg_name,
    "proof": _arg_signature,
    "weight": _bounded_int(1, MAX_WEIGHT),
    "numerator": _bounded_int(1, MAX_DENOMINATOR),
    "denominator": _bounded_int(1, MAX_DENOMINATOR),
    "blocks": _bounded_int(1, MAX_LIFETIME),
    "role": _one_of(ROLES),
    "accounts": _one_of(ACCOUNT_POLICIES),
    "issue": _one_of(ISSUE_POLICIES),
    "asset": _arg_asset,
})


# --- reading and writing the governance records ----------------------------------------------------

def committee(gs: GovState) -> dict[str, Any] | None:
    value: dict[str, Any] | None = gs.gov_get(COMMITTEE_KEY)
    return value


def policy(gs: GovState) -> dict[str, Any] | None:
    value: dict[str, Any] | None = gs.gov_get(POLICY_KEY)
    return value


def role_holders(gs: GovState) -> dict[str, list[str]]:
    value = gs.gov_get(ROLES_KEY) or {}
    return {role: list(value.get(role, [])) for role in ROLES}


def _put_role(gs: GovState, address: str, role: str, held: bool) -> None:
    holders = role_holders(gs)
    members = set(holders[role])
    if held:
        members.add(address)
    else:
        members.discard(address)
    holders[role] = sorted(members)
    gs.gov_put(ROLES_KEY, holders)
    flags = account_flags(gs, address)
    flags["roles"] = sorted((set(flags["roles"]) | {role}) if held else (set(flags["roles"]) - {role}))
    _put_flags(gs, address, flags)


def account_flags(gs: GovState, address: str) -> dict[str, Any]:
    value = gs.gov_get(flags_key(address))
    if value is None:
        return {"allowed": False, "frozen": False, "roles": []}
    return {"allowed": value["allowed"], "frozen": value["frozen"], "roles": list(value["roles"])}


def asset_frozen(gs: GovState, symbol: str) -> bool:
    value = gs.gov_get(asset_flags_key(symbol))
    return value is not None and bool(value["frozen"])


def _put_flags(gs: GovState, address: str, flags: dict[str, Any]) -> None:
    gs.gov_put(flags_key(address), {"allowed": flags["allowed"], "frozen": flags["frozen"],
                                    "roles": sorted(flags["roles"])})


def _enabled(gs: GovState) -> tuple[dict[str, Any], dict[str, Any]]:
    c, p = committee(gs), policy(gs)
    if c is None or p is None:
        raise Rejected("not_a_member", "this chain has no committee (its genesis defines none), "
                                       "so governance is disabled")
    return c, p


# --- actions ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """One kind of proposal: its arguments, the state it needs to apply, and its effect.

    `check` raises Rejected("invalid_proposal") when the action cannot apply to the state it is
    given (it runs at submission, at proposal time and again when the proposal passes); `apply`
    assumes `check` passed.
    """

    name: str
    summary: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    check: Callable[[GovState, Args], None]
    apply: Callable[[GovState, Args], None]
    # Actions that take effect later than the block executing them (validator-set changes): how
    # many blocks later, and the effect, given the proposal id and the effective height.
    delay: int = 0
    apply_at: Callable[[GovState, Args, str, int], None] | None = None


def _members(gs: GovState) -> dict[str, int]:
    c, _ = _enabled(gs)
    return dict(c["members"])


def _put_committee(gs: GovState, **changes: Any) -> None:
    c, _ = _enabled(gs)
    gs.gov_put(COMMITTEE_KEY, {**c, **changes})


def _put_policy(gs: GovState, **changes: Any) -> None:
    _, p = _enabled(gs)
    gs.gov_put(POLICY_KEY, {**p, **changes})


def _str(args: Args, name: str) -> str:
    return str(args[name])


def _int(args: Args, name: str) -> int:
    value = args[name]
    assert isinstance(value, int)
    return value


def _check_add_member(gs: GovState, args: Args) -> None:
    members, account = _members(gs), _str(args, "account")
    if account in members:
        raise _invalid(f"{account} is already a member; use set-weight to change its weight")
    if len(members) >= MAX_MEMBERS:
        raise _invalid(f"the committee already has the maximum of {MAX_MEMBERS} members")
    if account_flags(gs, account)["frozen"]:
        raise _invalid(f"{account} is frozen; a frozen account cannot be a member (unfreeze it first)")


def _apply_add_member(gs: GovState, args: Args) -> None:
    members = _members(gs)
    members[_str(args, "account")] = _int(args, "weight")
    _put_committee(gs, members=members)


def _check_member(gs: GovState, args: Args) -> None:
    account = _str(args, "account")
    if account not in _members(gs):
        raise _invalid(f"{account} is not a member of the committee")


def _check_remove_member(gs: GovState, args: Args) -> None:
    _check_member(gs, args)
    if len(_members(gs)) == 1:
        raise _invalid("it is the committee's only member; a committee without members could never "
                       "decide again (add another member first)")


def _apply_remove_member(gs: GovState, args: Args) -> None:
    members = _members(gs)
    del members[_str(args, "account")]
    _put_committee(gs, members=members)


def _apply_set_weight(gs: GovState, args: Args) -> None:
    members = _members(gs)
    members[_str(args, "account")] = _int(args, "weight")
    _put_committee(gs, members=members)


def _check_set_threshold(gs: GovState, args: Args) -> None:
    _enabled(gs)
    if _int(args, "numerator") > _int(args, "denominator"):
        raise _invalid("the threshold numerator/denominator must be at most 1: a threshold above the "
                       "committee's total weight could never be reached")


def _apply_set_threshold(gs: GovState, args: Args) -> None:
    _put_committee(gs, numerator=_int(args, "numerator"), denominator=_int(args, "denominator"))


def _check_enabled(gs: GovState, args: Args) -> None:
    _enabled(gs)


def _apply_set_lifetime(gs: GovState, args: Args) -> None:
    _put_committee(gs, lifetime=_int(args, "blocks"))


def _check_grant_role(gs: GovState, args: Args) -> None:
    _enabled(gs)
    account, role = _str(args, "account"), _str(args, "role")
    if role in account_flags(gs, account)["roles"]:
        raise _invalid(f"{account} already has the role {role}")
    if len(role_holders(gs)[role]) >= MAX_ROLE_HOLDERS:
        raise _invalid(f"{MAX_ROLE_HOLDERS} accounts hold the role {role} already")


def _apply_grant_role(gs: GovState, args: Args) -> None:
    _put_role(gs, _str(args, "account"), _str(args, "role"), True)


def _check_revoke_role(gs: GovState, args: Args) -> None:
    _, p = _enabled(gs)
    account, role = _str(args, "account"), _str(args, "role")
    if role not in account_flags(gs, account)["roles"]:
        raise _invalid(f"{account} does not have the role {role}")
    if role == "issuer" and p["issue"] == "issuers" and len(role_holders(gs)["issuer"]) == 1:
        raise _invalid("it is the last issuer while the policy lets only issuers issue; grant the role to "
                       "another account or set the issue policy to anyone first")


def _apply_revoke_role(gs: GovState, args: Args) -> None:
    _put_role(gs, _str(args, "account"), _str(args, "role"), False)


def _check_set_policy(gs: GovState, args: Args) -> None:
    _, p = _enabled(gs)
    if not args:
        raise _invalid("set-policy needs at least one of accounts, issue")
    if args.get("accounts") == "allowlist" and p["allowed"] == 0:
        raise _invalid("no account is allow-listed, so the allowlist policy would leave no account able to "
                       "transact; allow accounts first")
    if args.get("issue") == "issuers" and not role_holders(gs)["issuer"]:
        raise _invalid("no account has the issuer role, so the issuers policy would leave nobody able to "
                       "issue; grant the role first")


def _apply_set_policy(gs: GovState, args: Args) -> None:
    _put_policy(gs, **{k: args[k] for k in ("accounts", "issue") if k in args})


def _check_allow(gs: GovState, args: Args) -> None:
    _enabled(gs)
    account = _str(args, "account")
    if account_flags(gs, account)["allowed"]:
        raise _invalid(f"{account} is already allow-listed")


def _set_allowed(gs: GovState, args: Args, allowed: bool) -> None:
    account = _str(args, "account")
    flags = account_flags(gs, account)
    flags["allowed"] = allowed
    _put_flags(gs, account, flags)
    _, p = _enabled(gs)
    _put_policy(gs, allowed=p["allowed"] + (1 if allowed else -1))


def _check_deny(gs: GovState, args: Args) -> None:
    _, p = _enabled(gs)
    account = _str(args, "account")
    if not account_flags(gs, account)["allowed"]:
        raise _invalid(f"{account} is not allow-listed")
    if p["accounts"] == "allowlist" and p["allowed"] == 1:
        raise _invalid("it is the last allow-listed account under the allowlist policy; denying it would "
                       "leave no account able to transact")


def _check_freeze(gs: GovState, args: Args) -> None:
    account = _str(args, "account")
    if account in _members(gs):
        raise _invalid(f"{account} is a committee member; a frozen member could not vote, so remove it from "
                       "the committee first")
    if account_flags(gs, account)["frozen"]:
        raise _invalid(f"{account} is already frozen")


def _check_unfreeze(gs: GovState, args: Args) -> None:
    _enabled(gs)
    account = _str(args, "account")
    if not account_flags(gs, account)["frozen"]:
        raise _invalid(f"{account} is not frozen")


def _set_frozen(gs: GovState, args: Args, frozen: bool) -> None:
    account = _str(args, "account")
    flags = account_flags(gs, account)
    flags["frozen"] = frozen
    _put_flags(gs, account, flags)


def _check_freeze_asset(gs: GovState, args: Args) -> None:
    _enabled(gs)
    asset = _str(args, "asset")
    if not gs.asset_exists(asset):
        raise _invalid(f"asset {asset} does not exist")
    if asset_frozen(gs, asset):
        raise _invalid(f"asset {asset} is already frozen")


def _check_unfreeze_asset(gs: GovState, args: Args) -> None:
    _enabled(gs)
    asset = _str(args, "asset")
    if not asset_frozen(gs, asset):
        raise _invalid(f"asset {asset} is not frozen")


def _apply_valset_change(action: str) -> Callable[[GovState, Args, str, int], None]:
    def apply_at(gs: GovState, args: Args, proposal_id: str, effective_height: int) -> None:
        valset.apply_change(gs, action, args, proposal_id, effective_height)
    return apply_at


def _no_immediate_effect(gs: GovState, args: Args) -> None:
    """The `apply` of an action whose whole effect is its delayed `apply_at`."""


def _set_asset_frozen(gs: GovState, args: Args, frozen: bool) -> None:
    gs.gov_put(asset_flags_key(_str(args, "asset")), {"frozen": frozen})


_ACTION_LIST = (
    Action("add-member", "add an account to the committee with a weight", ("account", "weight"), (),
           _check_add_member, _apply_add_member),
    Action("remove-member", "remove a member from the committee", ("account",), (),
           _check_remove_member, _apply_remove_member),
    Action("set-weight", "change a member's weight", ("account", "weight"), (),
           _check_member, _apply_set_weight),
    Action("set-threshold", "set the approval threshold to numerator/denominator of the total weight",
           ("numerator", "denominator"), (), _check_set_threshold, _apply_set_threshold),
    Action("set-lifetime", "set how many blocks a new proposal stays open", ("blocks",), (),
           _check_enabled, _apply_set_lifetime),
    Action("grant-role", "give an account a role (issuer, auditor)", ("account", "role"), (),
           _check_grant_role, _apply_grant_role),
    Action("revoke-role", "take a role from an account", ("account", "role"), (),
           _check_revoke_role, _apply_revoke_role),
    Action("set-policy", "set who may transact (open|allowlist) and who may issue (anyone|issuers)",
           (), ("accounts", "issue"), _check_set_policy, _apply_set_policy),
    Action("allow-account", "add an account to the allowlist", ("account",), (),
           _check_allow, lambda gs, a: _set_allowed(gs, a, True)),
    Action("deny-account", "remove an account from the allowlist", ("account",), (),
           _check_deny, lambda gs, a: _set_allowed(gs, a, False)),
    Action("freeze-account", "stop an account from sending anything", ("account",), (),
           _check_freeze, lambda gs, a: _set_frozen(gs, a, True)),
    Action("unfreeze-account", "let a frozen account send again", ("account",), (),
           _check_unfreeze, lambda gs, a: _set_frozen(gs, a, False)),
    Action("freeze-asset", "stop every transfer of an asset", ("asset",), (),
           _check_freeze_asset, lambda gs, a: _set_asset_frozen(gs, a, True)),
    Action("unfreeze-asset", "let an asset be transferred again", ("asset",), (),
           _check_unfreeze_asset, lambda gs, a: _set_asset_frozen(gs, a, False)),
    *(Action(name, summary, required, optional, check, _no_immediate_effect, valset.ACTIVATION_DELAY,
             _apply_valset_change(name))
      for name, summary, required, optional, check in (
          ("add-validator", "add a validator (its node id, p2p URL and name) from the activation height on",
           ("node_id", "p2p_url"), ("name",), valset.check_add),
          ("remove-validator", "retire a validator from the activation height on", ("node_id",), (),
           valset.check_remove),
          ("rotate-validator-key", "replace a validator's node key (proof: the new key's signature of the "
           "rotation) from the activation height on", ("new_node_id", "node_id", "proof"), (),
           valset.check_rotate),
      )),
)

# The action table: a new kind of proposal is one more `Action` (and its argument kinds above).
ACTIONS: Mapping[str, Action] = MappingProxyType({a.name: a for a in _ACTION_LIST})


def decode_action(name: Any, args: Any) -> tuple[str, tuple[tuple[str, ArgValue], ...]]:
    """A proposal's action and arguments from parsed JSON, checked for shape; sorted arguments.

    Raises Rejected("invalid_proposal") with a message saying what is wrong.
    """
    if not isinstance(name, str) or name not in ACTIONS:
        raise _invalid(f"payload.action must be one of {', '.join(ACTIONS)}")
    action = ACTIONS[name]
    if not isinstance(args, dict):
        raise _invalid("payload.args must be a JSON object")
    allowed = set(action.required) | set(action.optional)
    missing = [k for k in action.required if k not in args]
    extra = sorted(k for k in args if k not in allowed)
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unknown argument(s) {', '.join(extra)}"] if extra else [])
        raise _invalid(f"{name}: {'; '.join(parts)}")
    return name, tuple(sorted((k, ARG_KINDS[k](v, f"payload.args.{k}")) for k, v in args.items()))


# --- permissions of ordinary transactions ----------------------------------------------------------

def check_sender(gs: GovState, sender: str, tx_type: str) -> None:
    """Raise Rejected when `sender` may not send a `tx_type` transaction under the state in force."""
    p = policy(gs)
    if p is None:
        if tx_type in GOVERNANCE_TX_TYPES:
            _enabled(gs)
        return  # no governance: everything is open
    flags = account_flags(gs, sender)
    if flags["frozen"]:
        raise Rejected("account_frozen", f"account {sender} is frozen by the committee; it can send nothing")
    if tx_type in GOVERNANCE_TX_TYPES:
        c, _ = _enabled(gs)
        if sender not in c["members"]:
            raise Rejected("not_a_member", f"{sender} is not a member of the committee; only members "
                                           "propose and vote")
        return
    if p["accounts"] == "allowlist" and not flags["allowed"]:
        raise Rejected("not_permitted", f"the chain's policy lets only allow-listed accounts transact, and "
                                        f"{sender} is not allow-listed")
    if tx_type == "issue" and p["issue"] == "issuers" and "issuer" not in flags["roles"]:
        raise Rejected("not_permitted", f"the chain's policy lets only accounts with the issuer role issue "
                                        f"assets, and {sender} does not have it")


def check_transfer(gs: GovState, asset: str) -> None:
    # Without a policy there is no governance, so nothing can be frozen: no read of asset flags.
    if policy(gs) is not None and asset_frozen(gs, asset):
        raise Rejected("asset_frozen", f"asset {asset} is frozen by the committee; it cannot be transferred")


# --- proposals and votes ---------------------------------------------------------------------------

def _proposal(gs: GovState, proposal_id: str) -> dict[str, Any]:
    value = gs.gov_get(proposal_key(proposal_id))
    if value is None:
        raise Rejected("unknown_proposal", f"no proposal {proposal_id} on this chain")
    return dict(value)


def check_propose(gs: GovState, sender: str, action: str, args: Args) -> None:
    """After `check_sender`: raise Rejected when this proposal may not be made now."""
    open_ids = gs.gov_get(OPEN_KEY) or []
    if len(open_ids) >= MAX_OPEN_PROPOSALS:
        raise _invalid(f"{MAX_OPEN_PROPOSALS} proposals are open already; vote on them or let them expire")
    ACTIONS[action].check(gs, args)
    if action in valset.VALSET_ACTIONS:
        # At most one validator-set change in flight: a second open one could only fail later.
        for other in open_ids:
            p = _proposal(gs, other)
            if p["action"] in valset.VALSET_ACTIONS:
                raise _invalid(f"proposal {other} ({p['action']}) is open; one validator-set change at a time "
                               "(vote on it or let it expire first)")


def check_vote(gs: GovState, sender: str, proposal_id: str, height: int | None) -> None:
    """After `check_sender`: raise Rejected when `sender` may not vote on the proposal now.

    `height`: the block the vote would execute in (None: not known; expiry is not checked).
    """
    p = _proposal(gs, proposal_id)
    if p["status"] != "open":
        raise Rejected("proposal_closed", f"proposal {proposal_id} is {p['status']}; it takes no more votes")
    if height is not None and height > p["expires_at"]:
        raise Rejected("proposal_closed", f"proposal {proposal_id} expired after block {p['expires_at']}; "
                                          "it takes no more votes")
    if sender in p["votes"]:
        raise Rejected("already_voted", f"{sender} has already voted on proposal {proposal_id}")


def apply_propose(gs: GovState, sender: str, proposal_id: str, action: str, args: Args, height: int) -> None:
    """Record a proposal (checked by `check_propose`) with its proposer's approval, and settle it."""
    c, _ = _enabled(gs)
    count = gs.gov_get(COUNT_KEY) or 0
    gs.gov_put(COUNT_KEY, count + 1)
    gs.gov_put(seq_key(count), proposal_id)
    gs.gov_put(OPEN_KEY, [*(gs.gov_get(OPEN_KEY) or []), proposal_id])
    gs.gov_put(proposal_key(proposal_id), {
        "id": proposal_id, "seq": count, "proposer": sender, "action": action, "args": dict(args),
        "height": height, "expires_at": height + c["lifetime"], "votes": {sender: True},
        "status": "open", "executed_height": None, "effective_height": None, "closed_height": None,
        "reason": "",
    })
    _settle(gs, proposal_id, height)


def apply_vote(gs: GovState, sender: str, proposal_id: str, approve: bool, height: int) -> None:
    """Record a vote (checked by `check_vote`) and settle the proposal if it is decided."""
    p = _proposal(gs, proposal_id)
    p["votes"] = {**p["votes"], sender: approve}
    gs.gov_put(proposal_key(proposal_id), p)
    _settle(gs, proposal_id, height)


def tally(committee_: Mapping[str, Any], votes: Mapping[str, bool]) -> tuple[int, int, int]:
    """(approving weight, rejecting weight, total weight) under `committee_`; former members' votes
    do not count."""
    members: Mapping[str, int] = committee_["members"]
    approve = sum(w for m, w in members.items() if votes.get(m) is True)
    reject = sum(w for m, w in members.items() if votes.get(m) is False)
    return approve, reject, sum(members.values())


def _settle(gs: GovState, proposal_id: str, height: int) -> None:
    c, _ = _enabled(gs)
    p = _proposal(gs, proposal_id)
    approve, reject, total = tally(c, p["votes"])
    num, den = c["numerator"], c["denominator"]
    if approve * den >= num * total:
        action = ACTIONS[p["action"]]
        try:
            action.check(gs, p["args"])
        except Rejected as exc:
            _close(gs, p, "rejected", height, f"it passed, but no longer applies: {exc.message}")
            return
        action.apply(gs, p["args"])
        p["executed_height"] = p["effective_height"] = height
        if action.apply_at is not None:
            p["effective_height"] = height + action.delay
            action.apply_at(gs, p["args"], proposal_id, height + action.delay)
        _close(gs, p, "executed", height, "")
    elif (total - reject) * den < num * total:
        _close(gs, p, "rejected", height, "the approving weight can no longer reach the threshold")


def _close(gs: GovState, p: dict[str, Any], status: str, height: int, reason: str) -> None:
    p["status"], p["closed_height"], p["reason"] = status, height, reason
    gs.gov_put(proposal_key(p["id"]), p)
    gs.gov_put(OPEN_KEY, [i for i in gs.gov_get(OPEN_KEY) or [] if i != p["id"]])
    event = {"proposal": p["id"], "action": p["action"], "status": status}
    if reason:
        event["reason"] = reason
    gs.gov_put(log_key(height), [*(gs.gov_get(log_key(height)) or []), event])


def begin_block(gs: GovState, height: int) -> None:
    """Expire the open proposals whose lifetime ended before `height`; runs first in every block."""
    if policy(gs) is not None:  # read per block anyway; a chain without it has no set to change
        valset.begin_block(gs, height)
    open_ids = gs.gov_get(OPEN_KEY)
    if not open_ids:
        return
    for proposal_id in list(open_ids):
        p = _proposal(gs, proposal_id)
        if height > p["expires_at"]:
            _close(gs, p, "expired", height, f"no decision within its lifetime (blocks {p['height']} to "
                                             f"{p['expires_at']})")


# --- genesis ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenesisGovernance:
    """The `governance` section of a genesis file: committee, policy, initial roles and allowlist."""

    members: tuple[tuple[str, int], ...]
    numerator: int
    denominator: int
    lifetime: int
    accounts: str = "open"
    issue: str = "anyone"
    roles: tuple[tuple[str, tuple[str, ...]], ...] = ()
    allowlist: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "committee": {"members": [{"address": a, "weight": w} for a, w in self.members],
                          "threshold": {"numerator": self.numerator, "denominator": self.denominator},
                          "lifetime": self.lifetime},
            "policy": {"accounts": self.accounts, "issue": self.issue},
            "roles": [{"address": a, "roles": list(r)} for a, r in self.roles],
            "allowlist": list(self.allowlist),
        }

    @classmethod
    def from_json(cls, obj: Any) -> GenesisGovernance:
        def bad(message: str) -> Rejected:
            return Rejected("bad_genesis", f"genesis: governance: {message}")

        def exact(value: Any, fields: set[str], where: str) -> dict[str, Any]:
            if not isinstance(value, dict) or set(value) != fields:
                raise bad(f"{where} must be an object with exactly {', '.join(sorted(fields))}")
            return value

        def integer(value: Any, low: int, high: int, where: str) -> int:
            if type(value) is not int or not low <= value <= high:
                raise bad(f"{where} must be an integer from {low} to {high}")
            return value

        g = exact(obj, {"committee", "policy", "roles", "allowlist"}, "governance")
        c = exact(g["committee"], {"members", "threshold", "lifetime"}, "committee")
        raw_members = c["members"]
        if not isinstance(raw_members, list) or not 1 <= len(raw_members) <= MAX_MEMBERS:
            raise bad(f"committee.members must be a list of 1 to {MAX_MEMBERS} members")
        members = []
        for m in raw_members:
            m = exact(m, {"address", "weight"}, "each member")
            if not keys.is_address(m["address"]):
                raise bad("a member address must be 64 lowercase hex characters")
            members.append((str(m["address"]), integer(m["weight"], 1, MAX_WEIGHT, "a member weight")))
        if len({a for a, _ in members}) != len(members):
            raise bad("committee members must be distinct")
        t = exact(c["threshold"], {"numerator", "denominator"}, "committee.threshold")
        den = integer(t["denominator"], 1, MAX_DENOMINATOR, "threshold.denominator")
        num = integer(t["numerator"], 1, den, "threshold.numerator (at most the denominator)")
        lifetime = integer(c["lifetime"], 1, MAX_LIFETIME, "committee.lifetime")
        p = exact(g["policy"], {"accounts", "issue"}, "policy")
        if p["accounts"] not in ACCOUNT_POLICIES or p["issue"] not in ISSUE_POLICIES:
            raise bad(f"policy.accounts is one of {', '.join(ACCOUNT_POLICIES)} and policy.issue one of "
                      f"{', '.join(ISSUE_POLICIES)}")
        roles = []
        if not isinstance(g["roles"], list):
            raise bad("roles must be a list")
        for r in g["roles"]:
            r = exact(r, {"address", "roles"}, "each roles entry")
            names = r["roles"]
            if not keys.is_address(r["address"]) or not isinstance(names, list) or not names \
                    or any(n not in ROLES for n in names) or len(set(names)) != len(names):
                raise bad(f"each roles entry is {{address: 64 hex, roles: distinct names of {', '.join(ROLES)}}}")
            roles.append((str(r["address"]), tuple(sorted(names))))
        if len({a for a, _ in roles}) != len(roles):
            raise bad("roles lists each address once")
        if any(sum(1 for _, r in roles if role in r) > MAX_ROLE_HOLDERS for role in ROLES):
            raise bad(f"at most {MAX_ROLE_HOLDERS} accounts hold each role")
        allow = g["allowlist"]
        if not isinstance(allow, list) or not all(keys.is_address(a) for a in allow) or len(set(allow)) != len(allow):
            raise bad("allowlist must be a list of distinct addresses")
        result = cls(tuple(members), num, den, lifetime, p["accounts"], p["issue"], tuple(roles),
                     tuple(str(a) for a in allow))
        if result.accounts == "allowlist" and not result.allowlist:
            raise bad("the allowlist policy needs at least one allow-listed account")
        if result.issue == "issuers" and not any("issuer" in r for _, r in result.roles):
            raise bad("the issuers policy needs at least one account with the issuer role")
        return result

    def write_initial(self, gs: GovState) -> None:
        """The governance records at height 0."""
        gs.gov_put(COMMITTEE_KEY, {"members": dict(self.members), "numerator": self.numerator,
                                   "denominator": self.denominator, "lifetime": self.lifetime})
        gs.gov_put(POLICY_KEY, {"accounts": self.accounts, "issue": self.issue,
                                "allowed": len(self.allowlist)})
        roles = dict(self.roles)
        gs.gov_put(ROLES_KEY, {role: sorted(a for a, r in self.roles if role in r) for role in ROLES})
        for address in sorted(set(roles) | set(self.allowlist)):
            _put_flags(gs, address, {"allowed": address in self.allowlist, "frozen": False,
                                     "roles": list(roles.get(address, ()))})


# --- read-only views (REST, CLI) -------------------------------------------------------------------

def proposal_view(gs: GovState, proposal_id: str, next_height: int) -> dict[str, Any] | None:
    """A proposal as the API shows it, with its tally under the committee in force.

    An open proposal whose lifetime has ended shows as `expired`: the next block will close it
    (an idle chain makes no block to do so), and no vote can reach it any more.
    """
    p = gs.gov_get(proposal_key(proposal_id))
    if p is None:
        return None
    view = dict(p)
    view.setdefault("effective_height", p["executed_height"])
    view["votes"] = [{"member": m, "approve": v} for m, v in sorted(p["votes"].items())]
    if view["status"] == "open" and next_height > p["expires_at"]:
        view["status"] = "expired"
    c = committee(gs)
    if c is not None:
        approve, reject, total = tally(c, p["votes"])
        view["tally"] = {"approve_weight": approve, "reject_weight": reject, "total_weight": total,
                         "threshold": f"{c['numerator']}/{c['denominator']}"}
    return view


def list_proposals(gs: GovState, status: str | None, limit: int, next_height: int) -> list[dict[str, Any]]:
    """Newest first, up to `limit`, optionally only those with `status` (as `proposal_view` shows it).

    Open ones come from the open list; others by walking back through the proposal sequence, at
    most `limit * 16` records (a bounded read per request).
    """
    out: list[dict[str, Any]] = []
    if status == "open":
        for proposal_id in reversed(gs.gov_get(OPEN_KEY) or []):
            view = proposal_view(gs, proposal_id, next_height)
            if view is not None and view["status"] == "open":
                out.append(view)
            if len(out) >= limit:
                break
        return out
    count = gs.gov_get(COUNT_KEY) or 0
    budget = limit * 16
    seq = count - 1
    while seq >= 0 and len(out) < limit and budget > 0:
        proposal_id = gs.gov_get(seq_key(seq))
        view = proposal_view(gs, str(proposal_id), next_height)
        if view is not None and (status is None or view["status"] == status):
            out.append(view)
        seq -= 1
        budget -= 1
    return out


def overview(gs: GovState, next_height: int) -> dict[str, Any]:
    """The committee, the policy, the role holders and the open proposals' ids."""
    c, p = committee(gs), policy(gs)
    if c is None or p is None:
        return {"enabled": False, "committee": None, "policy": {"accounts": "open", "issue": "anyone"},
                "roles": {role: [] for role in ROLES}, "open_proposals": []}
    return {
        "enabled": True,
        "committee": {"members": [{"address": a, "weight": w} for a, w in sorted(c["members"].items())],
                      "total_weight": sum(c["members"].values()),
                      "threshold": {"numerator": c["numerator"], "denominator": c["denominator"]},
                      "lifetime": c["lifetime"]},
        "policy": {"accounts": p["accounts"], "issue": p["issue"], "allowlisted_accounts": p["allowed"]},
        "roles": role_holders(gs),
        "open_proposals": [i for i in gs.gov_get(OPEN_KEY) or []
                           if (v := proposal_view(gs, i, next_height)) is not None and v["status"] == "open"],
    }


def events_at(gs: GovState, height: int) -> list[dict[str, Any]]:
    """The governance events of the block at `height` (proposals that closed in it)."""
    value: list[dict[str, Any]] | None = gs.gov_get(log_key(height))
    return list(value or [])
