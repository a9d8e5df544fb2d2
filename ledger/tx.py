"""Transactions: the contract's JSON shape, strict decoding, signing bytes and hash.

The decoder is the single gate for transactions from anywhere (REST, gossip, blocks). It accepts
exactly the contract's shape, with no unknown fields, and rebuilds the body from the parsed values,
so the signed bytes are canonical whatever spacing or key order the client sent.

Most bytes a node reads are already canonical: gossip and blocks carry `Transaction.encode()`, and
clients that sign usually send what they signed. `decode_canonical_array` reads such bytes with
one regular expression per transaction, without building JSON objects, and answers None as soon
as anything is not in canonical form, so the caller falls back to the strict decoder. It accepts
only what `decode_tx` accepts, and decodes it to the same transaction (tests hold the two
together); refusals, with their precise error codes, always come from `decode_tx`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ledger import keys
from ledger.encoding import canonical_json_trusted, sha256_hex
from ledger.errors import Rejected
from ledger.governance import ArgValue, decode_action

SIGNING_PREFIX = b"ledgerd-tx-v1:"
MAX_SAFE_INT = 2**53 - 1
MAX_RECORD_KEY_BYTES = 128
MAX_RECORD_VALUE_BYTES = 4096
ASSET_RE = re.compile(r"[A-Z][A-Z0-9]{1,11}")
CHAIN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TX_TYPES = ("transfer", "issue", "record", "propose", "vote")


@dataclass(frozen=True, slots=True)
class Transfer:
    to: str
    asset: str
    amount: int

    def to_json(self) -> dict[str, Any]:
        return {"to": self.to, "asset": self.asset, "amount": self.amount}


@dataclass(frozen=True, slots=True)
class Issue:
    asset: str
    supply: int

    def to_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "supply": self.supply}


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value}


@dataclass(frozen=True, slots=True)
class Propose:
    """A governance proposal: an action of `ledger.governance.ACTIONS` and its arguments (sorted)."""

    action: str
    args: tuple[tuple[str, ArgValue], ...]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "args": dict(self.args)}


@dataclass(frozen=True, slots=True)
class Vote:
    proposal: str  # the proposal's id: the hash of its `propose` transaction
    approve: bool

    def to_json(self) -> dict[str, Any]:
        return {"approve": self.approve, "proposal": self.proposal}


Payload = Transfer | Issue | Record | Propose | Vote


@dataclass(frozen=True, slots=True, eq=False)
class Transaction:
    """A decoded, well-formed transaction. Its signature is NOT yet known to be valid."""

    chain_id: str
    sender: str
    nonce: int
    type: str
    payload: Payload
    signature: bytes
    signing_bytes: bytes
    hash: str
    _encoded: list[bytes] = field(default_factory=list, init=False, repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "sender": self.sender,
            "nonce": self.nonce,
            "type": self.type,
            "payload": self.payload.to_json(),
        }

    def to_json(self) -> dict[str, Any]:
        return {"body": self.body(), "signature": self.signature.hex()}

    def encode(self) -> bytes:
        """Canonical JSON of the whole transaction, computed once (blocks and gossip both need it).

        `{"body":B,"signature":S}` with B the canonical body, which the signing bytes already hold.
        """
        if not self._encoded:
            body = self.signing_bytes[len(SIGNING_PREFIX):]
            self._encoded.append(b'{"body":' + body + b',"signature":"' + self.signature.hex().encode() + b'"}')
        return self._encoded[0]

    def signature_valid(self) -> bool:
        return keys.verify(self.sender, self.signature, self.signing_bytes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transaction) and other.hash == self.hash and other.signature == self.signature

    def __hash__(self) -> int:
        return hash(self.hash)


def _malformed(message: str) -> Rejected:
    return Rejected("malformed", message)


_TX_KEYS = ("body", "signature")
_BODY_KEYS = ("chain_id", "sender", "nonce", "type", "payload")
_TRANSFER_KEYS = ("to", "asset", "amount")
_ISSUE_KEYS = ("asset", "supply")
_RECORD_KEYS = ("key", "value")
_PROPOSE_KEYS = ("action", "args")
_VOTE_KEYS = ("proposal", "approve")
# Each object's field names as a set, made once: comparing a dict's keys with a set is one C call.
_KEY_SETS: Mapping[tuple[str, ...], frozenset[str]] = MappingProxyType(
    {keys_: frozenset(keys_) for keys_ in (_TX_KEYS, _BODY_KEYS, _TRANSFER_KEYS, _ISSUE_KEYS, _RECORD_KEYS,
                                                  _PROPOSE_KEYS, _VOTE_KEYS)})


def _exact_keys(obj: Any, where: str, expected: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _malformed(f"{where} must be a JSON object")
    if obj.keys() != _KEY_SETS[expected]:
        missing = [k for k in expected if k not in obj]
        extra = sorted(k for k in obj if k not in expected)
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unknown field(s) " + ", ".join(extra))
        raise _malformed(f"{where}: {'; '.join(parts)}")
    return obj


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _malformed(f"{where} must be a string")
    return value


def _address(value: Any, where: str) -> str:
    if not keys.is_address(value):
        raise _malformed(f"{where} must be 64 lowercase hex characters (an Ed25519 public key)")
    return str(value)


def _amount(value: Any, where: str) -> int:
    # bool is an int subclass in Python; JSON true is not an amount.
    if type(value) is not int:
        raise Rejected("invalid_amount", f"{where} must be an integer, not {_json_type(value)}")
    if not 1 <= value <= MAX_SAFE_INT:
        raise Rejected("invalid_amount", f"{where} must be between 1 and 2^53-1")
    return value


def _asset(value: Any, where: str) -> str:
    text = _string(value, where)
    if not ASSET_RE.fullmatch(text):
        raise Rejected("invalid_asset", f"{where} must match [A-Z][A-Z0-9]{{1,11}}")
    return text


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return type(value).__name__


def _utf8_len(text: str, where: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _malformed(f"{where} is not valid Unicode") from exc


def decode_payload(tx_type: str, obj: Any) -> Payload:
    if tx_type == "transfer":
        p = _exact_keys(obj, "payload", _TRANSFER_KEYS)
        return Transfer(_address(p["to"], "payload.to"), _asset(p["asset"], "payload.asset"),
                        _amount(p["amount"], "payload.amount"))
    if tx_type == "issue":
        p = _exact_keys(obj, "payload", _ISSUE_KEYS)
        return Issue(_asset(p["asset"], "payload.asset"), _amount(p["supply"], "payload.supply"))
    if tx_type == "record":
        p = _exact_keys(obj, "payload", _RECORD_KEYS)
        key = _string(p["key"], "payload.key")
        value = _string(p["value"], "payload.value")
        if not 1 <= _utf8_len(key, "payload.key") <= MAX_RECORD_KEY_BYTES:
            raise Rejected("record_too_large", f"payload.key must be 1 to {MAX_RECORD_KEY_BYTES} bytes of UTF-8")
        if _utf8_len(value, "payload.value") > MAX_RECORD_VALUE_BYTES:
            raise Rejected("record_too_large", f"payload.value must be at most {MAX_RECORD_VALUE_BYTES} bytes of UTF-8")
        return Record(key, value)
    if tx_type == "propose":
        p = _exact_keys(obj, "payload", _PROPOSE_KEYS)
        action, args = decode_action(p["action"], p["args"])
        return Propose(action, args)
    if tx_type == "vote":
        p = _exact_keys(obj, "payload", _VOTE_KEYS)
        if type(p["approve"]) is not bool:
            raise _malformed("payload.approve must be true or false")
        return Vote(_address(p["proposal"], "payload.proposal"), p["approve"])
    raise _malformed(f"body.type must be one of {', '.join(TX_TYPES)}")


# --- the fast path for canonical bytes ---------------------------------------------------------------

# Integers: canonical JSON has no leading zeros; 16 digits bound them below 10^16 (the range check
# against 2^53-1 is in code). Strings: canonical JSON leaves printable ASCII but `"` and `\` as is.
_INT = rb"(0|[1-9][0-9]{0,15})"
_POS = rb"([1-9][0-9]{0,15})"
_HEX64 = rb"([0-9a-f]{64})"
_ASSET = rb"([A-Z][A-Z0-9]{1,11})"
_PLAIN = rb'([\x20\x21\x23-\x5b\x5d-\x7e]*)'
_CANONICAL_TX = re.compile(
    rb'\{"body":(\{"chain_id":"([A-Za-z0-9][A-Za-z0-9._-]{0,63})","nonce":' + _INT + rb',"payload":\{(?:'
    rb'"amount":' + _POS + rb',"asset":"' + _ASSET + rb'","to":"' + _HEX64 + rb'"'
    rb'|"asset":"' + _ASSET + rb'","supply":' + _POS +
    rb'|"key":"' + _PLAIN + rb'","value":"' + _PLAIN + rb'"'
    rb'|"approve":(true|false),"proposal":"' + _HEX64 + rb'"'
    rb')\},"sender":"' + _HEX64 + rb'","type":"(transfer|issue|record|vote)"\}),"signature":"([0-9a-f]{128})"\}')


_SIGNATURE_FIELD = b'"signature":"'  # then 128 hex digits


def _remembered_at(data: bytes, pos: int, end: int, memo: DecodeMemo) -> Transaction | None:
    """The remembered transaction whose exact canonical bytes stand at `data[pos:]` (a proposal's,
    met first in gossip), without the regex: all a fresh decode could accept there. Found by the
    first signature field at or after `pos`; a wrong find cannot matter, since only the remembered
    bytes are taken."""
    at = data.find(_SIGNATURE_FIELD, pos, end)
    if at < 0:
        return None
    sig_at = at + len(_SIGNATURE_FIELD)
    hit = memo.lookup(data[sig_at:sig_at + 128].decode("latin-1"))
    return hit if hit is not None and data.startswith(hit.encode(), pos, end) else None


def _decode_canonical(match: re.Match[bytes], memo: DecodeMemo | None) -> Transaction | None:
    """The transaction a `_CANONICAL_TX` match spells, or None if it breaks a rule the regex
    cannot express (ranges, the payload fitting the type); `decode_tx` then says why."""
    (body, chain_id, nonce, amount, asset, to, issue_asset, supply, key, value, approve, proposal, sender,
     tx_type, signature) = match.groups()
    raw = match.group(0)
    sig_hex = signature.decode()
    if memo is not None:
        hit = memo.lookup(sig_hex)
        if hit is not None and hit.encode() == raw:
            return hit
    payload: Payload
    if tx_type == b"transfer" and amount is not None:
        payload = Transfer(to.decode(), asset.decode(), int(amount))
        if payload.amount > MAX_SAFE_INT:
            return None
    elif tx_type == b"issue" and supply is not None:
        payload = Issue(issue_asset.decode(), int(supply))
        if payload.supply > MAX_SAFE_INT:
            return None
    elif tx_type == b"record" and key is not None:
        if not 1 <= len(key) <= MAX_RECORD_KEY_BYTES or len(value) > MAX_RECORD_VALUE_BYTES:
            return None
        payload = Record(key.decode(), value.decode())
    elif tx_type == b"vote" and approve is not None:
        payload = Vote(proposal.decode(), approve == b"true")
    else:
        return None
    nonce_value = int(nonce)
    if nonce_value > MAX_SAFE_INT:
        return None
    signing = SIGNING_PREFIX + body
    tx = Transaction(chain_id.decode(), sender.decode(), nonce_value, tx_type.decode(), payload,
                     bytes.fromhex(sig_hex), signing, sha256_hex(signing))
    tx._encoded.append(raw)
    if memo is not None:
        memo.put(sig_hex, tx)
    return tx


def decode_canonical_array(data: bytes, start: int = 0, end: int | None = None,
                           memo: DecodeMemo | None = None) -> list[Transaction] | None:
    """Transactions from `data[start:end]` when it is a JSON array of canonical transactions
    (`[` tx `,` tx ... `]`, no whitespace); None when it is anything else, for `decode_tx`.
    With a `memo`, transactions seen before are answered from it (see `DecodeMemo`)."""
    end = len(data) if end is None else end
    if end - start < 2 or data[start] != 0x5B or data[end - 1] != 0x5D:  # [ ... ]
        return None
    txs: list[Transaction] = []
    pos = start + 1
    if pos == end - 1:
        return txs
    match_at = _CANONICAL_TX.match
    while True:
        tx = _remembered_at(data, pos, end, memo) if memo is not None else None
        if tx is not None:
            pos += len(tx.encode())
        else:
            match = match_at(data, pos, end)
            if match is None:
                return None
            tx = _decode_canonical(match, memo)
            if tx is None:
                return None
            pos = match.end()
        txs.append(tx)
        if pos == end - 1:
            return txs
        if data[pos] != 0x2C:  # ,
            return None
        pos += 1


def decode_canonical_tx(data: bytes, memo: DecodeMemo | None = None) -> Transaction | None:
    """One canonical transaction from all of `data`, or None (see `decode_canonical_array`)."""
    match = _CANONICAL_TX.fullmatch(data)
    return None if match is None else _decode_canonical(match, memo)


def decode_tx(obj: Any, memo: DecodeMemo | None = None) -> Transaction:
    """Decode one transaction from parsed JSON; raises Rejected for anything off-contract.

    With a `memo`, a transaction seen before (the same JSON, by value and by JSON type) answers the
    Transaction decoded then: a replica meets most transactions twice, in gossip and again in a
    proposal.
    """
    if memo is None:
        return _decode_tx(obj)
    hit = memo.get(obj)
    if hit is not None:
        return hit
    tx = _decode_tx(obj)
    memo.put(obj["signature"], tx)
    return tx


def _decode_tx(obj: Any) -> Transaction:
    tx = _exact_keys(obj, "transaction", _TX_KEYS)
    body = _exact_keys(tx["body"], "body", _BODY_KEYS)
    chain_id = _string(body["chain_id"], "body.chain_id")
    if not CHAIN_ID_RE.fullmatch(chain_id):
        raise _malformed("body.chain_id must be 1 to 64 characters of [A-Za-z0-9._-]")
    sender = _address(body["sender"], "body.sender")
    nonce = body["nonce"]
    if type(nonce) is not int or not 0 <= nonce <= MAX_SAFE_INT:
        raise _malformed("body.nonce must be an integer between 0 and 2^53-1")
    tx_type = _string(body["type"], "body.type")
    payload = decode_payload(tx_type, body["payload"])
    sig_hex = tx["signature"]
    if not isinstance(sig_hex, str) or not keys.is_hex(sig_hex, 128):
        raise _malformed("signature must be 128 lowercase hex characters")
    signing = SIGNING_PREFIX + _validated_body_json(chain_id, sender, nonce, tx_type, payload)
    return Transaction(chain_id, sender, nonce, tx_type, payload, bytes.fromhex(sig_hex), signing,
                       sha256_hex(signing))


def _validated_body_json(chain_id: str, sender: str, nonce: int, tx_type: str, payload: Payload) -> bytes:
    """The canonical JSON of a body whose fields the decoder has checked, without a generic encoder.

    Byte-for-byte what `canonical_json_trusted(body)` gives (a test holds the two together): keys
    in sorted order, and every string but a record's key and value is from an alphabet that JSON
    never escapes (chain_id, hex, asset symbols, the type names), so only those two go through the
    encoder.
    """
    if type(payload) is Transfer:
        inner = f'{{"amount":{payload.amount},"asset":"{payload.asset}","to":"{payload.to}"}}'
    elif type(payload) is Issue:
        inner = f'{{"asset":"{payload.asset}","supply":{payload.supply}}}'
    elif type(payload) is Record:
        inner = f'{{"key":{_json_string(payload.key)},"value":{_json_string(payload.value)}}}'
    else:
        # Governance payloads are rare: the generic encoder is fast enough for them.
        inner = canonical_json_trusted(payload.to_json()).decode()
    return (f'{{"chain_id":"{chain_id}","nonce":{nonce},"payload":{inner},'
            f'"sender":"{sender}","type":"{tx_type}"}}').encode()


def _json_string(text: str) -> str:
    return canonical_json_trusted(text).decode()


class DecodeMemo:
    """Recently decoded transactions by signature, so that decoding the same JSON twice is cheap.

    A hit needs the new object to equal the remembered transaction's JSON *and* to have the same
    JSON type at every place (integers where it has integers, booleans where it has booleans):
    Python's `==` says 1 == 1.0 == True, and a strict decoder refuses a float or boolean nonce or
    amount (or an integer `approve`), so equality alone would let a memo accept what a fresh decode
    refuses (and nodes with different memories disagree about a block). Strings, objects and key
    sets compare exactly. The memo never changes a result, only its cost; it is bounded, evicts
    oldest first, and its dict operations are safe under the GIL from any thread. Owned by the
    node (one per node), handed to whatever decodes for it: gossip intake and the consensus engine.
    """

    MAX_ENTRIES = 16_384  # several full blocks between gossip and proposal; bounds what it keeps alive

    def __init__(self) -> None:
        # Two generations: lookups try both; when the young one is full it becomes the old one and
        # the old one is dropped. O(1) per operation (popping a dict's oldest key is not: iterating
        # from the front skips every slot deleted before it).
        self._young: dict[str, Transaction] = {}
        self._old: dict[str, Transaction] = {}

    def lookup(self, sig_hex: str) -> Transaction | None:
        """The transaction remembered under this signature; the caller compares it with its input."""
        return self._young.get(sig_hex) or self._old.get(sig_hex)

    def get(self, obj: Any) -> Transaction | None:
        if type(obj) is not dict:
            return None
        sig = obj.get("signature")
        if type(sig) is not str:
            return None
        hit = self.lookup(sig)
        if hit is None:
            return None
        known = hit.to_json()
        if known != obj or not _same_types(known, obj):
            return None
        return hit

    def put(self, sig_hex: str, tx: Transaction) -> None:
        young = self._young
        young[sig_hex] = tx
        if len(young) >= self.MAX_ENTRIES // 2:
            self._old, self._young = young, {}

    def clear(self) -> None:
        self._young, self._old = {}, {}


def _same_types(known: Any, value: Any) -> bool:
    """`value` (already == `known`) has the same JSON type as `known` everywhere: Python's == says
    1 == 1.0 == True, and the decoder tells integers, floats and booleans apart."""
    if type(known) is not type(value):
        return False
    if type(known) is dict:
        return all(_same_types(v, value[k]) for k, v in known.items())
    return True


def build(chain_id: str, sender: str, nonce: int, tx_type: str, payload: Payload, signature: bytes) -> Transaction:
    body = {"chain_id": chain_id, "sender": sender, "nonce": nonce, "type": tx_type, "payload": payload.to_json()}
    signing = SIGNING_PREFIX + canonical_json_trusted(body)
    return Transaction(chain_id, sender, nonce, tx_type, payload, signature, signing, sha256_hex(signing))


def sign_tx(key: keys.PrivateKey, chain_id: str, nonce: int, payload: Payload) -> Transaction:
    """Build and sign a transaction with `key` as the sender."""
    tx_type = {Transfer: "transfer", Issue: "issue", Record: "record", Propose: "propose",
               Vote: "vote"}[type(payload)]
    unsigned = build(chain_id, key.address, nonce, tx_type, payload, b"")
    return build(chain_id, key.address, nonce, tx_type, payload, key.sign(unsigned.signing_bytes))
