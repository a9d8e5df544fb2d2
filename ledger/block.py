"""Blocks: header, hash, byte encoding and structural decoding.

The header hash is SHA-256 over `b"ledgerd-block-v1:" + canonical_json(header)` for every header
version (a version-2 header's JSON holds `"version": 2`, so no two versions share bytes). The
block's bytes are canonical JSON of `{"header": ..., "txs": [...]}`, assembled from each
transaction's cached encoding so a block of thousands of transactions is not re-serialised field
by field.

Header versions:
  1  the original header, without a `version` field: `tx_root` commits to the transactions, nothing
     commits to their results. Blocks of chains started before version 2 stay valid as they are.
  2  adds `version: 2` and `receipts_root`, the Merkle root of the block's receipts (each leaf the
     transaction hash followed by its canonical receipt), so a transaction's result can be proven.
     Every block built now is version 2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger import keys
from ledger.encoding import canonical_json_trusted, sha256_hex
from ledger.errors import Rejected
from ledger.merkle import merkle_root, merkle_root_hex
from ledger.tx import CHAIN_ID_RE, DecodeMemo, Transaction, decode_canonical_array, decode_tx

BLOCK_PREFIX = b"ledgerd-block-v1:"
HEADER_FIELDS = ("app_hash", "chain_id", "height", "prev_hash", "proposer", "timestamp", "tx_count", "tx_root")
HEADER_FIELDS_V2 = tuple(sorted((*HEADER_FIELDS, "receipts_root", "version")))
HEADER_VERSIONS = (1, 2)
CURRENT_HEADER_VERSION = 2


class ReceiptLike(Protocol):
    def encode(self) -> bytes: ...


def receipt_leaf(tx_hash: str, receipt_bytes: bytes) -> bytes:
    """A receipts-tree leaf: the 32-byte transaction hash, then the canonical receipt JSON (the hash
    binds each result to its transaction, not only to its position)."""
    return bytes.fromhex(tx_hash) + receipt_bytes


def receipts_root_hex(tx_hashes: Sequence[str], receipts: Sequence[bytes]) -> str:
    """The receipts root over canonical receipt bytes, in block order."""
    if len(tx_hashes) != len(receipts):
        raise ValueError("one receipt per transaction")
    return merkle_root([receipt_leaf(h, r) for h, r in zip(tx_hashes, receipts, strict=True)]).hex()


@dataclass(frozen=True, slots=True)
class BlockHeader:
    chain_id: str
    height: int
    prev_hash: str
    timestamp: int  # milliseconds since the Unix epoch, chosen by the proposer
    proposer: str
    tx_root: str
    app_hash: str  # commitment to the state after this block's transactions
    tx_count: int
    receipts_root: str = ""  # version 2 only
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        if self.version >= 2:
            return {
                "app_hash": self.app_hash,
                "chain_id": self.chain_id,
                "height": self.height,
                "prev_hash": self.prev_hash,
                "proposer": self.proposer,
                "receipts_root": self.receipts_root,
                "timestamp": self.timestamp,
                "tx_count": self.tx_count,
                "tx_root": self.tx_root,
                "version": self.version,
            }
        return {
            "app_hash": self.app_hash,
            "chain_id": self.chain_id,
            "height": self.height,
            "prev_hash": self.prev_hash,
            "proposer": self.proposer,
            "timestamp": self.timestamp,
            "tx_count": self.tx_count,
            "tx_root": self.tx_root,
        }

    def hash(self) -> str:
        return sha256_hex(BLOCK_PREFIX + canonical_json_trusted(self.to_json()))


@dataclass(frozen=True, slots=True, eq=False)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...]
    hash: str = field(default="")
    _encoded: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", self.header.hash())

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        if not self._encoded:
            header = canonical_json_trusted(self.header.to_json())
            self._encoded.append(b'{"header":' + header + b',"txs":[' + b",".join(t.encode() for t in self.txs) + b"]}")
        return self._encoded[0]

    def to_json(self) -> dict[str, Any]:
        return {"header": self.header.to_json(), "hash": self.hash, "txs": [t.to_json() for t in self.txs]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)


def make_block(
    chain_id: str, height: int, prev_hash: str, timestamp: int, proposer: str,
    txs: tuple[Transaction, ...], app_hash: str, receipts: Sequence[ReceiptLike] | None = None,
) -> Block:
    """A version-2 block when the receipts of `txs` are given (or there are no transactions, whose
    receipts are known: none); otherwise a version-1 block, which commits to no results."""
    hashes = [t.hash for t in txs]
    tx_root = merkle_root_hex(hashes)
    if receipts is None and txs:
        return Block(BlockHeader(chain_id, height, prev_hash, timestamp, proposer, tx_root, app_hash, len(txs)),
                     txs)
    encoded = [r.encode() for r in receipts or ()]
    header = BlockHeader(chain_id, height, prev_hash, timestamp, proposer, tx_root, app_hash, len(txs),
                         receipts_root_hex(hashes, encoded), 2)
    return Block(header, txs)


def _int(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        raise Rejected("malformed_block", f"{where} must be a non-negative integer")
    return value


def _hex(value: Any, where: str) -> str:
    if not isinstance(value, str) or not keys.is_hex(value, 64):
        raise Rejected("malformed_block", f"{where} must be 64 lowercase hex characters")
    return value


def decode_header(obj: Any) -> BlockHeader:
    """A header of any known version from parsed JSON; Rejected for anything else."""
    if not isinstance(obj, dict):
        raise Rejected("malformed_block", "block header has the wrong fields")
    fields = sorted(obj)
    if fields == list(HEADER_FIELDS):
        version, receipts_root = 1, ""
    elif fields == list(HEADER_FIELDS_V2):
        if type(obj["version"]) is not int or obj["version"] != 2:
            raise Rejected("malformed_block", f"header.version must be one of {HEADER_VERSIONS[1:]}")
        version, receipts_root = 2, _hex(obj["receipts_root"], "receipts_root")
    else:
        raise Rejected("malformed_block", "block header has the wrong fields")
    chain_id = obj["chain_id"]
    if not isinstance(chain_id, str) or not CHAIN_ID_RE.fullmatch(chain_id):
        raise Rejected("malformed_block", "header.chain_id is invalid")
    return BlockHeader(
        chain_id, _int(obj["height"], "height"), _hex(obj["prev_hash"], "prev_hash"),
        _int(obj["timestamp"], "timestamp"), _hex(obj["proposer"], "proposer"),
        _hex(obj["tx_root"], "tx_root"), _hex(obj["app_hash"], "app_hash"), _int(obj["tx_count"], "tx_count"),
        receipts_root, version,
    )


_TXS_OPEN = b',"txs":['


def _decode_canonical_block(data: bytes, max_txs: int, memo: DecodeMemo | None
                            ) -> tuple[BlockHeader, tuple[Transaction, ...]] | None:
    """Header and transactions of a block in its own canonical encoding (`Block.encode`), without
    parsing the transactions as JSON; None for anything else (the caller decodes it strictly)."""
    if not data.startswith(b'{"header":{') or not data.endswith(b"]}"):
        return None
    header_end = data.find(b"}", 10) + 1  # the header is flat: its first closing brace ends it
    if header_end == 0 or data[header_end:header_end + len(_TXS_OPEN)] != _TXS_OPEN:
        return None
    try:
        header = decode_header(json.loads(data[10:header_end]))
    except (ValueError, UnicodeDecodeError, RecursionError, Rejected):
        return None
    txs = decode_canonical_array(data, header_end + len(_TXS_OPEN) - 1, len(data) - 1, memo)
    if txs is None or len(txs) > max_txs:
        return None
    return header, tuple(txs)


def decode_block_header(data: bytes) -> BlockHeader:
    """Only the header of a block's bytes, without decoding its transactions when the bytes are the
    block's own canonical encoding (reading a long run of stored blocks for their headers)."""
    if data.startswith(b'{"header":{'):
        header_end = data.find(b"}", 10) + 1
        if header_end > 0 and data[header_end:header_end + len(_TXS_OPEN)] == _TXS_OPEN:
            try:
                return decode_header(json.loads(data[10:header_end]))
            except (ValueError, UnicodeDecodeError, Rejected):
                pass
    return decode_block(data).header


def block_transactions(data: bytes, memo: DecodeMemo | None = None) -> tuple[Transaction, ...] | None:
    """The transactions of a block in its canonical encoding, decoded as `decode_block` would
    (through `memo`) but without checking the block itself; None for anything else. For work that
    may start before the block is checked (fetching signature verdicts), never for a decision."""
    fast = _decode_canonical_block(data, 100_000, memo)
    return None if fast is None else fast[1]


def decode_block(data: bytes, max_txs: int = 100_000, memo: DecodeMemo | None = None) -> Block:
    """Decode a block's bytes and check its internal consistency (tx_count, tx_root); `memo`
    answers transactions decoded before (a proposal's, met first in gossip)."""
    fast = _decode_canonical_block(data, max_txs, memo)
    if fast is not None:
        return _checked_block(data, *fast)
    try:
        obj = json.loads(data)
    except RecursionError:  # what the JSON parser raises for deep nesting: bad input all the same
        raise Rejected("malformed_block", "block is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected("malformed_block", f"block is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict) or sorted(obj) != ["header", "txs"] or not isinstance(obj["txs"], list):
        raise Rejected("malformed_block", "block must be an object with header and txs")
    header = decode_header(obj["header"])
    if len(obj["txs"]) > max_txs:
        raise Rejected("malformed_block", f"block has more than {max_txs} transactions")
    try:
        txs = tuple(decode_tx(t, memo) for t in obj["txs"])
    except Rejected as exc:
        raise Rejected("malformed_block", f"block holds a malformed transaction: {exc.message}") from exc
    return _checked_block(data, header, txs)


def _checked_block(data: bytes, header: BlockHeader, txs: tuple[Transaction, ...]) -> Block:
    if header.tx_count != len(txs):
        raise Rejected("malformed_block", "header.tx_count does not match the transactions")
    if header.tx_root != merkle_root_hex([t.hash for t in txs]):
        raise Rejected("malformed_block", "header.tx_root does not match the transactions")
    block = Block(header, txs)
    block._encoded.append(bytes(data))
    return block
