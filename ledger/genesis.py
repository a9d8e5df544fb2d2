"""Genesis: the chain's identity, its validator set, its engine, its initial allocations and,
optionally, its governance (committee, policy, roles, allowlist: `ledger.governance`).

A genesis without a `governance` section (every genesis written before governance existed) still
loads, with the same hash and the same initial state: such a chain has no committee, so
governance is disabled on it (open policy, no freezes; `propose` and `vote` fail).

Everything every node must agree on before the first block lives here; addresses and ports do not
(they are per-node configuration). The genesis hash is block 1's `prev_hash`, and the genesis
write set seeds the app hash chain, so two nodes with different genesis files can never agree on
a block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger import keys, valset
from ledger.encoding import canonical_json, sha256_hex
from ledger.errors import Rejected
from ledger.governance import GenesisGovernance
from ledger.state import NATIVE_ASSET, StateOverlay, chain_app_hash
from ledger.tx import CHAIN_ID_RE, MAX_SAFE_INT

ENGINES = ("pbft", "raft")
ZERO_HASH = "0" * 64
GENESIS_ISSUER = ZERO_HASH


@dataclass(frozen=True)
class Validator:
    node_id: str  # hex Ed25519 public key of the node key
    name: str


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time: int  # ms since the Unix epoch
    consensus: str
    validators: tuple[Validator, ...]
    allocations: tuple[tuple[str, int], ...]  # (address, LDG amount)
    governance: GenesisGovernance | None = None  # None: no committee, governance disabled

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "consensus": self.consensus,
            "validators": [{"node_id": v.node_id, "name": v.name} for v in self.validators],
            "allocations": [{"address": a, "balances": {NATIVE_ASSET: n}} for a, n in self.allocations],
        }
        if self.governance is not None:
            out["governance"] = self.governance.to_json()
        return out

    def hash(self) -> str:
        return sha256_hex(b"ledgerd-genesis-v1:" + canonical_json(self.to_json()))

    @property
    def validator_ids(self) -> tuple[str, ...]:
        return tuple(v.node_id for v in self.validators)

    def initial_writes(self) -> dict[bytes, bytes]:
        overlay = StateOverlay(_Empty(), self.chain_id)
        total = sum(n for _, n in self.allocations)
        overlay.create_asset(NATIVE_ASSET, GENESIS_ISSUER, total, 0)
        for address, amount in self.allocations:
            overlay.credit_genesis(address, NATIVE_ASSET, amount)
        if self.governance is not None:
            self.governance.write_initial(overlay)
            # Only a chain with a committee can change its validator set, so only there is the
            # set state (a chain without one keeps the genesis set, and its state, for ever).
            valset.write_initial(overlay, self.consensus, tuple((v.node_id, v.name) for v in self.validators))
        return overlay.writes()

    def initial_app_hash(self) -> str:
        return chain_app_hash(self.hash(), self.initial_writes())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            obj = json.loads(path.read_text())
        except OSError as exc:
            raise Rejected("bad_genesis", f"cannot read genesis file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise Rejected("bad_genesis", f"genesis file {path} is not valid JSON: {exc}") from exc
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: Any) -> Genesis:
        def bad(msg: str) -> Rejected:
            return Rejected("bad_genesis", f"genesis: {msg}")

        fields = {"chain_id", "genesis_time", "consensus", "validators", "allocations"}
        if not isinstance(obj, dict) or not fields <= set(obj) <= fields | {"governance"}:
            raise bad("expected exactly chain_id, genesis_time, consensus, validators, allocations "
                      "(and optionally governance)")
        chain_id, consensus, gtime = obj["chain_id"], obj["consensus"], obj["genesis_time"]
        if not isinstance(chain_id, str) or not CHAIN_ID_RE.fullmatch(chain_id):
            raise bad("chain_id must be 1 to 64 characters of [A-Za-z0-9._-]")
        if consensus not in ENGINES:
            raise bad(f"consensus must be one of {', '.join(ENGINES)}")
        if type(gtime) is not int or gtime < 0:
            raise bad("genesis_time must be a non-negative integer (ms)")
        vals = obj["validators"]
        if not isinstance(vals, list) or not vals:
            raise bad("validators must be a non-empty list")
        validators = []
        for v in vals:
            if not isinstance(v, dict) or set(v) != {"node_id", "name"} or not keys.is_address(v["node_id"]) \
                    or not isinstance(v["name"], str):
                raise bad("each validator is {node_id: 64 hex, name: string}")
            validators.append(Validator(v["node_id"], v["name"]))
        if len({v.node_id for v in validators}) != len(validators):
            raise bad("validator node ids must be distinct")
        allocs = []
        for a in obj["allocations"] if isinstance(obj["allocations"], list) else [None]:
            if not isinstance(a, dict) or set(a) != {"address", "balances"} or not keys.is_address(a["address"]) \
                    or not isinstance(a["balances"], dict) or set(a["balances"]) != {NATIVE_ASSET} \
                    or type(a["balances"][NATIVE_ASSET]) is not int or a["balances"][NATIVE_ASSET] <= 0:
                raise bad(f"each allocation is {{address: 64 hex, balances: {{{NATIVE_ASSET}: positive int}}}}")
            allocs.append((a["address"], a["balances"][NATIVE_ASSET]))
        if sum(n for _, n in allocs) > MAX_SAFE_INT:
            raise bad("total allocation exceeds 2^53-1")
        governance = GenesisGovernance.from_json(obj["governance"]) if "governance" in obj else None
        return cls(chain_id, gtime, consensus, tuple(validators), tuple(allocs), governance)


class _Empty:
    def get(self, key: bytes) -> bytes | None:
        return None
