"""The deterministic state machine: accounts, assets and records, and block execution.

State is a key/value map whose keys are order-preserving bytes:

    b"a" + address(32 bytes)          -> account  {"balances": {asset: amount}, "nonce": n}
    b"s" + asset symbol (ASCII)        -> asset    {"issuer": address, "supply": n, "height": h}
    b"r" + owner(32 bytes) + key UTF-8 -> record   {"value": str, "height": h, "tx": hash}
    b"g" + ...                          governance: committee, policy, flags, proposals
                                        (`ledger.governance` documents its keys)

Execution reads through a `StateReader` (the database, or a dict in tests) and collects the
block's write set in an overlay; nothing is written until the caller commits the write set. The
app hash chains each block's sorted write set onto the previous app hash, so two nodes agree on
it exactly when they agree on every state change, without rehashing the whole state.

Rules. A transaction is *invalid* (it may not appear in a block at all) when its chain_id is wrong
or its nonce is not the sender's next nonce; signatures are checked by the caller, once. A valid
transaction always consumes its nonce; it then *succeeds* or *fails* with a stable code
(insufficient_funds, unknown_asset, asset_exists, and the governance codes: account_frozen,
not_permitted, asset_frozen, not_a_member, unknown_proposal, proposal_closed, already_voted,
invalid_proposal) and a failure changes nothing else. Every block begins by expiring the governance
proposals whose lifetime ended (`ledger.governance.begin_block`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ledger import governance, valset
from ledger.encoding import canonical_json_trusted, sha256, sha256_hex
from ledger.errors import Rejected
from ledger.tx import Issue, Propose, Record, Transaction, Transfer, Vote

APP_HASH_PREFIX = b"ledgerd-app-v1:"
NATIVE_ASSET = "LDG"


class StateReader(Protocol):
    def get(self, key: bytes) -> bytes | None: ...


def account_key(address: str) -> bytes:
    return b"a" + bytes.fromhex(address)


def asset_key(symbol: str) -> bytes:
    return b"s" + symbol.encode("ascii")


def record_key(owner: str, key: str) -> bytes:
    return b"r" + bytes.fromhex(owner) + key.encode("utf-8")


@dataclass(slots=True)
class Account:
    nonce: int
    balances: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"balances": self.balances, "nonce": self.nonce}


@dataclass(frozen=True, slots=True)
class Receipt:
    """The result of one executed transaction: code "ok", or a failure code and message."""

    code: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message} if self.message else {"code": self.code}

    def encode(self) -> bytes:
        """Canonical JSON of `to_json()`; the common "ok" receipt's bytes are made once."""
        if self is OK:
            return _OK_BYTES
        return canonical_json_trusted(self.to_json())


OK = Receipt("ok")
_OK_BYTES = canonical_json_trusted(OK.to_json())


def encode_account(acct: Account) -> bytes:
    """`canonical_json_trusted(acct.to_json())`, formatted directly: balances are keyed by asset
    symbols (genesis's native asset and `issue`'s checked symbols), which JSON never escapes."""
    balances = ",".join([f'"{k}":{v}' for k, v in sorted(acct.balances.items())])
    return f'{{"balances":{{{balances}}},"nonce":{acct.nonce}}}'.encode()


class ParseMemo:
    """Stored account and asset bytes -> their parsed values, remembered by those bytes.

    Every admission and execution reads accounts, most of them unchanged since the last read;
    equal bytes always parse to equal values and callers get fresh copies, so the memo changes
    nothing but the cost. Owned by whoever owns the readers (one per node), bounded by
    `max_entries` per kind, and cleared whole when full.
    """

    __slots__ = ("max_entries", "_accounts", "_assets")

    def __init__(self, max_entries: int = 65_536) -> None:
        self.max_entries = max_entries
        self._accounts: dict[bytes, tuple[int, dict[str, int]]] = {}
        self._assets: dict[bytes, dict[str, Any]] = {}

    def account(self, raw: bytes) -> Account:
        known = self._accounts.get(raw)
        if known is None:
            known = _parse_account(raw)
            if len(self._accounts) >= self.max_entries:
                self._accounts.clear()
            self._accounts[raw] = known
        return Account(known[0], dict(known[1]))

    def asset(self, raw: bytes) -> dict[str, Any]:
        known = self._assets.get(raw)
        if known is None:
            if len(self._assets) >= self.max_entries:
                self._assets.clear()
            known = self._assets[raw] = json.loads(raw)
        return dict(known)


def _parse_account(raw: bytes) -> tuple[int, dict[str, int]]:
    obj = json.loads(raw)
    return obj["nonce"], obj["balances"]


def decode_account(raw: bytes | None, memo: ParseMemo | None = None) -> Account:
    """A fresh (mutable) Account from its stored bytes (an absent account is empty)."""
    if raw is None:
        return Account(0, {})
    if memo is not None:
        return memo.account(raw)
    nonce, balances = _parse_account(raw)
    return Account(nonce, dict(balances))


class StateOverlay:
    """Reads through to `reader` and keeps every change in memory until `writes()` is taken."""

    def __init__(self, reader: StateReader, chain_id: str, memo: ParseMemo | None = None) -> None:
        self._reader = reader
        self.chain_id = chain_id
        self._memo = memo
        self._accounts: dict[str, Account] = {}
        self._assets: dict[str, dict[str, Any] | None] = {}
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._dirty_accounts: set[str] = set()
        self._dirty_assets: set[str] = set()
        self._gov: dict[bytes, Any] = {}
        self._dirty_gov: set[bytes] = set()
        # Permission checks that passed, and the count of governance writes (`gov_put`) they saw:
        # (sender, tx type) for `check_sender`, an asset for `check_transfer`. Both read only
        # governance records through `gov_get`, which answers from `_gov` once read, so a pass
        # holds until this overlay writes a governance record (which may change the policy, a
        # flag or the committee) and is checked afresh after that. Refusals are never kept.
        self._gov_writes = 0
        self._sender_passed: dict[tuple[str, str], int] = {}
        self._transfer_passed: dict[str, int] = {}
        # The block the next transaction executes in, for rules that depend on it (a vote after
        # its proposal's lifetime); None when unknown, and then such rules are left to execution.
        self.height: int | None = None

    # --- governance records (ledger.governance.GovState) ----------------------------------------

    def gov_get(self, key: bytes) -> Any:
        if key not in self._gov:
            raw = self._reader.get(key)
            self._gov[key] = None if raw is None else json.loads(raw)
        return self._gov[key]

    def gov_put(self, key: bytes, value: Any) -> None:
        self._gov[key] = value
        self._dirty_gov.add(key)
        self._gov_writes += 1

    def asset_exists(self, symbol: str) -> bool:
        return self.asset(symbol) is not None

    def account(self, address: str) -> Account:
        acct = self._accounts.get(address)
        if acct is None:
            acct = decode_account(self._reader.get(account_key(address)), self._memo)
            self._accounts[address] = acct
        return acct

    def asset(self, symbol: str) -> dict[str, Any] | None:
        if symbol not in self._assets:
            raw = self._reader.get(asset_key(symbol))
            if raw is None:
                self._assets[symbol] = None
            else:
                self._assets[symbol] = self._memo.asset(raw) if self._memo is not None else json.loads(raw)
        return self._assets[symbol]

    def check_valid(self, tx: Transaction) -> None:
        """Raise Rejected when `tx` may not be included next (chain id, nonce)."""
        if tx.chain_id != self.chain_id:
            raise Rejected("wrong_chain_id", f"chain_id is {tx.chain_id!r}, this chain is {self.chain_id!r}")
        expected = self.account(tx.sender).nonce
        if tx.nonce != expected:
            if tx.nonce < expected:
                raise Rejected("nonce_used", f"nonce {tx.nonce} was already used; the next nonce is {expected}")
            raise Rejected("nonce_gap", f"nonce {tx.nonce} is ahead of the next nonce {expected}")

    def check_executes(self, tx: Transaction) -> Receipt:
        """The receipt `tx` would get if applied now, without applying it."""
        payload = tx.payload
        writes = self._gov_writes
        try:
            sender_key = (tx.sender, tx.type)
            if self._sender_passed.get(sender_key) != writes:
                governance.check_sender(self, tx.sender, tx.type)
                self._sender_passed[sender_key] = writes
            if isinstance(payload, Propose):
                governance.check_propose(self, tx.sender, payload.action, dict(payload.args))
            elif isinstance(payload, Vote):
                governance.check_vote(self, tx.sender, payload.proposal, self.height)
            elif isinstance(payload, Transfer) and self._transfer_passed.get(payload.asset) != writes:
                governance.check_transfer(self, payload.asset)
                self._transfer_passed[payload.asset] = writes
        except Rejected as exc:
            return Receipt(exc.code, exc.message)
        if isinstance(payload, Transfer):
            if self.asset(payload.asset) is None:
                return Receipt("unknown_asset", f"asset {payload.asset} does not exist")
            have = self.account(tx.sender).balances.get(payload.asset, 0)
            if have < payload.amount:
                return Receipt("insufficient_funds",
                               f"balance of {payload.asset} is {have}, transfer needs {payload.amount}")
        elif isinstance(payload, Issue):
            if self.asset(payload.asset) is not None:
                return Receipt("asset_exists", f"asset {payload.asset} already exists")
        return OK

    def apply(self, tx: Transaction, height: int) -> Receipt:
        """Apply a transaction already known to be valid (see check_valid). Returns its receipt."""
        sender = self.account(tx.sender)
        sender.nonce += 1
        self._dirty_accounts.add(tx.sender)
        receipt = self.check_executes(tx)
        if not receipt.ok:
            return receipt
        return self._apply_effects(tx, sender, height, receipt)

    def apply_checked(self, tx: Transaction, height: int) -> Receipt:
        """`apply`, for a transaction that `check_executes` has just passed on this overlay, with
        nothing applied in between: the same changes and receipt, without checking a second time.
        (The checks do not read the sender's nonce, the one thing `apply` changes before them.)"""
        sender = self.account(tx.sender)
        sender.nonce += 1
        self._dirty_accounts.add(tx.sender)
        return self._apply_effects(tx, sender, height, OK)

    def _apply_effects(self, tx: Transaction, sender: Account, height: int, receipt: Receipt) -> Receipt:
        payload = tx.payload
        if isinstance(payload, Transfer):
            sender.balances[payload.asset] -= payload.amount
            if sender.balances[payload.asset] == 0:
                del sender.balances[payload.asset]
            to = self.account(payload.to)
            to.balances[payload.asset] = to.balances.get(payload.asset, 0) + payload.amount
            self._dirty_accounts.add(payload.to)
        elif isinstance(payload, Issue):
            self._assets[payload.asset] = {"issuer": tx.sender, "supply": payload.supply, "height": height}
            self._dirty_assets.add(payload.asset)
            sender.balances[payload.asset] = payload.supply
        elif isinstance(payload, Record):
            self._records[(tx.sender, payload.key)] = {"value": payload.value, "height": height, "tx": tx.hash}
        elif isinstance(payload, (Propose, Vote)):
            changes = valset.change_count(self)
            if isinstance(payload, Propose):
                governance.apply_propose(self, tx.sender, tx.hash, payload.action, dict(payload.args), height)
            else:
                governance.apply_vote(self, tx.sender, payload.proposal, payload.approve, height)
            if valset.change_count(self) != changes:
                # This transaction decided a validator-set change: its receipt says which, so that the
                # block's receipts root commits to it (proofs walk the changes by these receipts).
                return Receipt("ok", valset.last_change_receipt(self))
        return receipt

    def credit_genesis(self, address: str, asset: str, amount: int) -> None:
        acct = self.account(address)
        acct.balances[asset] = acct.balances.get(asset, 0) + amount
        self._dirty_accounts.add(address)

    def create_asset(self, symbol: str, issuer: str, supply: int, height: int) -> None:
        self._assets[symbol] = {"issuer": issuer, "supply": supply, "height": height}
        self._dirty_assets.add(symbol)

    def writes(self) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for address in self._dirty_accounts:
            out[account_key(address)] = encode_account(self._accounts[address])
        for symbol in self._dirty_assets:
            out[asset_key(symbol)] = canonical_json_trusted(self._assets[symbol])
        for (owner, key), rec in self._records.items():
            out[record_key(owner, key)] = canonical_json_trusted(rec)
        for gov_key in self._dirty_gov:
            out[gov_key] = canonical_json_trusted(self._gov[gov_key])
        return out


def chain_app_hash(prev_app_hash: str, writes: Mapping[bytes, bytes]) -> str:
    """Fold one block's write set into the app hash chain."""
    parts = []
    for key in sorted(writes):
        value = writes[key]
        parts.append(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return sha256_hex(APP_HASH_PREFIX + bytes.fromhex(prev_app_hash) + sha256(b"".join(parts)))


@dataclass(frozen=True, slots=True)
class Execution:
    """What executing a block produced: per-tx receipts, the state write set, the new app hash."""

    receipts: tuple[Receipt, ...]
    writes: dict[bytes, bytes]
    app_hash: str


def execute(
    reader: StateReader, chain_id: str, height: int, txs: Iterable[Transaction], prev_app_hash: str,
    memo: ParseMemo | None = None,
) -> Execution:
    """Execute `txs` in order at `height`. Raises Rejected("invalid_block") on an invalid tx.

    Signatures are not checked here: the caller verifies each one once (see node/ and consensus/).
    """
    overlay = StateOverlay(reader, chain_id, memo)
    overlay.height = height
    governance.begin_block(overlay, height)
    receipts = []
    seen: set[str] = set()
    for index, tx in enumerate(txs):
        if tx.hash in seen:
            raise Rejected("invalid_block", f"transaction {index} ({tx.hash}) appears twice")
        seen.add(tx.hash)
        try:
            overlay.check_valid(tx)
        except Rejected as exc:
            raise Rejected("invalid_block", f"transaction {index} ({tx.hash}) is invalid: {exc.message}") from exc
        receipts.append(overlay.apply(tx, height))
    writes = overlay.writes()
    return Execution(tuple(receipts), writes, chain_app_hash(prev_app_hash, writes))
