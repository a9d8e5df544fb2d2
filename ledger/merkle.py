"""Merkle trees over transaction hashes, RFC 6962 style, with inclusion proofs.

Leaves and inner nodes are domain-separated (0x00 / 0x01 prefixes) so that an inner node can never
be passed off as a leaf. The empty tree's root is SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _leaf(item: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + item).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root(leaves: Sequence[bytes]) -> bytes:
    # Bottom-up pairing with the odd node promoted gives the same tree as RFC 6962's split rule.
    # `_node` written out: a block hashes about one inner node per transaction, twice (its
    # transactions and its receipts), so the call per node is worth saving.
    sha256 = hashlib.sha256
    level = list(leaves)
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(items: Sequence[bytes]) -> bytes:
    if not items:
        return hashlib.sha256(b"").digest()
    sha256 = hashlib.sha256
    return _root([sha256(b"\x00" + i).digest() for i in items])  # `_leaf` of each, written out


def merkle_root_hex(tx_hashes: Sequence[str]) -> str:
    return merkle_root([bytes.fromhex(h) for h in tx_hashes]).hex()


def inclusion_proof(items: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for items[index], leaf to root."""
    if not 0 <= index < len(items):
        raise IndexError("leaf index out of range")
    leaves = [_leaf(i) for i in items]
    path: list[bytes] = []

    def walk(lo: int, hi: int, idx: int) -> None:
        n = hi - lo
        if n == 1:
            return
        k = _split(n)
        if idx < lo + k:
            walk(lo, lo + k, idx)
            path.append(_root(leaves[lo + k:hi]))
        else:
            walk(lo + k, hi, idx)
            path.append(_root(leaves[lo:lo + k]))

    walk(0, len(leaves), index)
    return path


def verify_inclusion(item: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2 inclusion verification."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    acc = _leaf(item)
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            acc = _node(sibling, acc)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            acc = _node(acc, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and acc == root
