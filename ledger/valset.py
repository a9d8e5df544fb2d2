"""The validator set as ledger state, and the governance actions that change it.

Pure and deterministic, like the rest of `ledger/`: the committee decides a change by the usual
proposal and vote (`ledger.governance` holds the action table and calls the checks and effects
below), and the change is recorded in the state, so any node replaying the chain from genesis
learns the same set for every height.

State key (written at genesis only on a chain with a committee; without one the set can never
change, so it is the genesis set for ever and such a chain's state is what it always was):

    b"gv"   {"consensus": engine, "validators": [{"node_id", "name", "p2p_url"}, ...],
             "pending": null | {"proposal", "action", "effective_height", "validators": [...]},
             "changes": how many changes were ever decided}
    b"gw" + seq(8)   the seq-th change: {"executed_height", "effective_height", "validators": [ids]}
                     (the history a verifier walks from the genesis set: block sync, proofs)

Activation. A change decided in the block at height h is in force from height
h + ACTIVATION_DELAY on, for both engines. Until then it is `pending`, and no other change may be
proposed or executed (at most one change in flight). The delay is 2 so that the set of every
height h is fixed by the state committed at h - 2: a node still committing h - 1 when messages of
height h arrive (they are buffered, not dropped) already knows whom to expect them from, and a
proposal that passes in h - 1 cannot change the set of a height whose round may have started.

The order of `validators` is the order proposers rotate in: genesis order, a new validator last,
a rotated key in its predecessor's place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ledger import keys
from ledger.encoding import canonical_json, sha256_hex
from ledger.errors import Rejected

VALSET_KEY = b"gv"
ACTIVATION_DELAY = 2  # blocks after the one that executes the change (why: module docstring)
MAX_VALIDATORS = 64
MAX_NAME_CHARS = 64
MAX_URL_CHARS = 256
ROTATE_PREFIX = b"ledgerd-rotate-key-v1:"
VALSET_ACTIONS = frozenset({"add-validator", "remove-validator", "rotate-validator-key"})
# Engines whose membership changes are single-server steps (one voter in or out at a time): a key
# rotation swaps one voter for another at once, and the majorities of {a, b, c} and {a, b, d} can be
# disjoint ({b, c} and {a, d}), so these engines take it as two changes, an add then a remove.
SINGLE_SERVER_ENGINES = frozenset({"raft"})


class ValsetState(Protocol):
    """What these rules read and write (a `ledger.governance.GovState` with the chain id)."""

    chain_id: str

    def gov_get(self, key: bytes) -> Any: ...

    def gov_put(self, key: bytes, value: Any) -> None: ...


def _invalid(message: str) -> Rejected:
    return Rejected("invalid_proposal", message)


def bft_figures(n: int) -> tuple[int, int]:
    """(f, quorum) of `n` BFT validators, as PBFT counts them: n >= 3f + 1, and the smallest quorum
    any two of which share f + 1 validators (2f + 1 when n = 3f + 1)."""
    f = (n - 1) // 3
    return f, (n + f) // 2 + 1


def majority_figures(n: int) -> tuple[int, int]:
    """(f, quorum) of `n` Raft validators: a majority decides, so f = (n - 1) // 2 may crash."""
    return (n - 1) // 2, n // 2 + 1


def change_receipt_message(effective_height: int, validators: list[str] | tuple[str, ...]) -> str:
    """The message of the receipt of the transaction that decides a change (the vote, or proposal,
    that passed it). The block's receipts root commits to it, which is how a proof bundle shows that
    a block made a change (`ledger.proof.change_is_committed`)."""
    digest = sha256_hex(canonical_json(list(validators)))
    return f"validator-set change: in force from height {effective_height}; validators sha256 {digest}"


def rotation_message(chain_id: str, old_id: str, new_id: str) -> bytes:
    """The bytes the new key signs to prove its holder asks for the rotation (on this chain only)."""
    return ROTATE_PREFIX + canonical_json({"chain_id": chain_id, "new": new_id, "old": old_id})


# --- the record ------------------------------------------------------------------------------------

def write_initial(gs: ValsetState, consensus: str, validators: tuple[tuple[str, str], ...]) -> None:
    """The record at height 0: the genesis set, (node id, name) in genesis order."""
    gs.gov_put(VALSET_KEY, {"consensus": consensus, "pending": None, "changes": 0,
                            "validators": [{"node_id": i, "name": n, "p2p_url": ""} for i, n in validators]})


def record(gs: ValsetState) -> dict[str, Any] | None:
    value: dict[str, Any] | None = gs.gov_get(VALSET_KEY)
    return value


def entries_at(value: Mapping[str, Any] | None, height: int) -> list[dict[str, Any]] | None:
    """The validators (node_id, name, p2p_url) in force at `height`, from the record as committed at
    any height from `height - ACTIVATION_DELAY` to `height - 1`; None without a record (the genesis
    set then)."""
    if value is None:
        return None
    pending = value["pending"]
    if pending is not None and height >= pending["effective_height"]:
        return [dict(v) for v in pending["validators"]]
    return [dict(v) for v in value["validators"]]


def ids_at(value: Mapping[str, Any] | None, height: int) -> tuple[str, ...] | None:
    entries = entries_at(value, height)
    return None if entries is None else tuple(v["node_id"] for v in entries)


def begin_block(gs: ValsetState, height: int) -> None:
    """Fold a pending change into the set once its activation height is reached (bookkeeping only:
    `entries_at` already answers with the new set from that height on)."""
    value = record(gs)
    if value is None or value["pending"] is None or height < value["pending"]["effective_height"]:
        return
    gs.gov_put(VALSET_KEY, {**value, "validators": value["pending"]["validators"], "pending": None})


def pending_change(gs: ValsetState) -> dict[str, Any] | None:
    value = record(gs)
    return None if value is None else value["pending"]


# --- the actions ---------------------------------------------------------------------------------

def _current(gs: ValsetState) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    value = record(gs)
    if value is None:
        raise _invalid("this chain records no validator set in its state (its genesis has no committee), "
                       "so its validator set cannot change")
    if value["pending"] is not None:
        p = value["pending"]
        raise _invalid(f"a validator-set change ({p['action']} by proposal {p['proposal']}) is still waiting "
                       f"for its activation height {p['effective_height']}; one change at a time")
    return value, [dict(v) for v in value["validators"]]


def _ids(validators: list[dict[str, Any]]) -> list[str]:
    return [v["node_id"] for v in validators]


def check_add(gs: ValsetState, args: Mapping[str, Any]) -> None:
    _, validators = _current(gs)
    node_id = str(args["node_id"])
    if node_id in _ids(validators):
        raise _invalid(f"{node_id} is already a validator")
    if len(validators) >= MAX_VALIDATORS:
        raise _invalid(f"the validator set already has the maximum of {MAX_VALIDATORS} validators")


def check_remove(gs: ValsetState, args: Mapping[str, Any]) -> None:
    _, validators = _current(gs)
    node_id = str(args["node_id"])
    if node_id not in _ids(validators):
        raise _invalid(f"{node_id} is not a validator of this chain")
    if len(validators) == 1:
        raise _invalid("it is the last validator; a chain without validators could never make another block")


def check_rotate(gs: ValsetState, args: Mapping[str, Any]) -> None:
    value, validators = _current(gs)
    if value["consensus"] in SINGLE_SERVER_ENGINES:
        raise _invalid(f"under {value['consensus']} a key is not rotated in one step (the old and the new set "
                       "could decide without a common voter): add the new key (add-validator), then, once "
                       "that is in force, remove the old one (remove-validator)")
    old, new = str(args["node_id"]), str(args["new_node_id"])
    if old not in _ids(validators):
        raise _invalid(f"{old} is not a validator of this chain")
    if new in _ids(validators):
        raise _invalid(f"the new key {new} is already a validator")
    if not keys.verify(new, bytes.fromhex(str(args["proof"])), rotation_message(gs.chain_id, old, new)):
        raise _invalid("proof is not the new key's signature of the rotation (chain id, old id, new id): "
                       "only the holder of the new key may ask for it")


def changed_validators(gs: ValsetState, action: str, args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The validator list after `action` (assumes its check passed)."""
    _, validators = _current(gs)
    node_id = str(args["node_id"])
    if action == "add-validator":
        return [*validators, {"node_id": node_id, "name": str(args.get("name", "")),
                              "p2p_url": str(args["p2p_url"])}]
    if action == "remove-validator":
        return [v for v in validators if v["node_id"] != node_id]
    if action == "rotate-validator-key":
        return [{**v, "node_id": str(args["new_node_id"])} if v["node_id"] == node_id else v for v in validators]
    raise AssertionError(f"not a validator-set action: {action}")


def change_key(seq: int) -> bytes:
    return b"gw" + seq.to_bytes(8, "big")


def apply_change(gs: ValsetState, action: str, args: Mapping[str, Any], proposal_id: str,
                 effective_height: int) -> None:
    value, _ = _current(gs)
    after = changed_validators(gs, action, args)
    seq = value["changes"]
    gs.gov_put(change_key(seq), {"executed_height": effective_height - ACTIVATION_DELAY,
                                 "effective_height": effective_height, "validators": _ids(after)})
    gs.gov_put(VALSET_KEY, {**value, "changes": seq + 1, "pending": {
        "proposal": proposal_id, "action": action, "effective_height": effective_height,
        "validators": after}})


def change_count(gs: ValsetState) -> int:
    value = record(gs)
    return 0 if value is None else int(value["changes"])


def last_change_receipt(gs: ValsetState) -> str:
    """`change_receipt_message` of the most recent change (one exists)."""
    last = gs.gov_get(change_key(change_count(gs) - 1))
    return change_receipt_message(last["effective_height"], last["validators"])


def history(gs: ValsetState) -> list[dict[str, Any]]:
    """Every change ever decided, oldest first: {executed_height, effective_height, validators}."""
    value = record(gs)
    count = 0 if value is None else value["changes"]
    return [dict(gs.gov_get(change_key(seq))) for seq in range(count)]


def figures(n: int, consensus: str = "pbft") -> dict[str, int]:
    """n, f and the quorum of `n` validators as engine `consensus` counts them (PBFT: n >= 3f + 1;
    Raft: a majority)."""
    f, quorum = majority_figures(n) if consensus == "raft" else bft_figures(n)
    return {"n": n, "f": f, "quorum": quorum}


def preview(gs: ValsetState, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """What a change would make of the set: the new n, f and quorum, as the chain's engine counts
    them (assumes its check passed)."""
    value, _ = _current(gs)
    after = changed_validators(gs, action, args)
    return {**figures(len(after), str(value["consensus"])), "validators": _ids(after)}
