"""Canonical JSON: the byte form that is hashed and signed.

Keys sorted, no whitespace, UTF-8, integers only. For the values the ledger uses (objects with
ASCII keys, strings, integers, arrays, booleans, null) this is RFC 8785 (JCS): Python's sort of
ASCII keys equals JCS's UTF-16 sort, and its string escaping matches JCS for every code point.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ledger.errors import Rejected

_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise Rejected("malformed", "value is nested too deeply")
    if isinstance(value, float):
        raise Rejected("malformed", "floats are not allowed in canonical JSON; use integers")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Rejected("malformed", "object keys must be strings")
            _check(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check(item, depth + 1)


def canonical_json(value: Any) -> bytes:
    """Encode `value` canonically; raises Rejected for floats or text that is not valid UTF-8."""
    _check(value)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a "\ud800" escape
        raise Rejected("malformed", "text is not valid Unicode (lone surrogate)") from exc


def canonical_json_trusted(value: Any) -> bytes:
    """Canonical JSON for values this process built itself (no float/surrogate check)."""
    return _encoder.encode(value).encode("utf-8")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
