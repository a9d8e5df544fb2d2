"""The BFT engine's hard state: what it must remember across a crash, and its byte form.

Two records, written by `Persist` actions and handed back in `EngineContext.restored`:

    "bft/state"           canonical JSON of `HardState` (small; rewritten whenever it changes)
    "bft/prepared_block"  Block.encode() of the prepared block (written once per prepared block)

Why each field is needed after a restart:
- round, and what was signed in it (proposal, prepare, commit, round change): a validator never
  signs two different messages for one (height, round, kind), and never signs in an earlier round;
- prepared round, hash, certificate and block: the QBFT safety argument counts on every honest
  validator that sent a COMMIT still reporting its prepared block in later ROUND-CHANGEs, and a
  new proposer must be able to re-propose that block, so its bytes are kept too.
A record for a height below the chain tip is stale (the height was committed) and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from consensus.bft.messages import Vote, is_digest
from ledger.encoding import canonical_json_trusted

STATE_KEY = "bft/state"
BLOCK_KEY = "bft/prepared_block"
_FIELDS = ("commit", "height", "prepare", "prepared_cert", "prepared_hash", "prepared_round", "proposal",
           "round", "round_change", "v")


@dataclass(frozen=True, slots=True)
class HardState:
    height: int
    round: int
    proposal: str | None  # hash this validator proposed in `round`
    prepare: str | None  # hash it sent PREPARE for in `round`
    commit: str | None  # hash it sent COMMIT for in `round`
    round_change: bool  # it sent its ROUND-CHANGE for `round`
    prepared_round: int  # -1: nothing prepared at this height
    prepared_hash: str | None
    prepared_cert: tuple[Vote, ...]

    def encode(self) -> bytes:
        return canonical_json_trusted({
            "v": 1,
            "height": self.height,
            "round": self.round,
            "proposal": self.proposal,
            "prepare": self.prepare,
            "commit": self.commit,
            "round_change": self.round_change,
            "prepared_round": self.prepared_round,
            "prepared_hash": self.prepared_hash,
            "prepared_cert": [[v.author, v.signature.hex()] for v in self.prepared_cert],
        })


def _corrupt(what: str) -> ValueError:
    return ValueError(f"the BFT hard state record {STATE_KEY!r} is corrupt: {what}")


def _int(value: Any, what: str, low: int) -> int:
    if type(value) is not int or value < low:
        raise _corrupt(f"{what} must be an integer >= {low}")
    return value


def _hash(value: Any, what: str) -> str | None:
    if value is not None and not (isinstance(value, str) and is_digest(value)):
        raise _corrupt(f"{what} must be null or a 64-character hex hash")
    return value


def decode_state(raw: bytes) -> HardState:
    """Parse a record this engine wrote; anything else means the store is damaged, so it raises."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt("not JSON") from exc
    if not isinstance(obj, dict) or sorted(obj) != list(_FIELDS) or obj["v"] != 1:
        raise _corrupt("unexpected fields or version")
    cert = obj["prepared_cert"]
    if not isinstance(cert, list):
        raise _corrupt("prepared_cert must be a list")
    votes = []
    for item in cert:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
            raise _corrupt("prepared_cert entries are [author, signature hex]")
        try:
            votes.append(Vote(_int(item[0], "a vote author", 0), bytes.fromhex(item[1])))
        except ValueError as exc:
            raise _corrupt("a prepared_cert signature is not hex") from exc
    if not isinstance(obj["round_change"], bool):
        raise _corrupt("round_change must be a boolean")
    state = HardState(
        _int(obj["height"], "height", 1), _int(obj["round"], "round", 0), _hash(obj["proposal"], "proposal"),
        _hash(obj["prepare"], "prepare"), _hash(obj["commit"], "commit"), obj["round_change"],
        _int(obj["prepared_round"], "prepared_round", -1), _hash(obj["prepared_hash"], "prepared_hash"),
        tuple(votes),
    )
    prepared = state.prepared_round >= 0
    if prepared != (state.prepared_hash is not None) or prepared != bool(votes):
        raise _corrupt("prepared_round, prepared_hash and prepared_cert disagree")
    return state
