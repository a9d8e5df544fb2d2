"""The data frame format used after the handshake, and its strict decoder.

Every data frame is one binary WebSocket message:

    byte 0        frame format version (FRAME_VERSION)
    bytes 1..2    header length H, big-endian, 1..MAX_HEADER_BYTES
    bytes 3..3+H  header: compact JSON, one of
                    {"k":"msg","t":TOPIC}                           a gossip message
                    {"k":"req","t":TOPIC,"id":N}                    a request
                    {"k":"res","id":N}                              its answer
                    {"k":"err","id":N,"code":CODE,"message":TEXT}   its failure
    the rest      the payload, opaque bytes (empty for "err")

The version byte comes first so that a future format can change everything after it. Headers are
validated by pydantic models with extra="forbid" and strict types: a frame that does not decode is
refused whole, with a `FrameError` saying why.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

FRAME_VERSION = 1
MAX_HEADER_BYTES = 2048
MAX_REQUEST_ID = 2**63 - 1
MAX_ERROR_MESSAGE_CHARS = 256
TOPIC_PATTERN = r"^[a-z][a-z0-9_.-]{0,31}$"
ERROR_CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
_TOPIC_RE = re.compile(TOPIC_PATTERN)
_ERROR_CODE_RE = re.compile(ERROR_CODE_PATTERN)
_PREFIX_BYTES = 3

# What a message, request or response frame adds to its payload at most (the longest topic and id).
MAX_OVERHEAD_BYTES = _PREFIX_BYTES + len(json.dumps({"k": "req", "t": "t" * 32, "id": MAX_REQUEST_ID},
                                                    separators=(",", ":")))

Topic = Annotated[str, Field(pattern=TOPIC_PATTERN)]
RequestId = Annotated[int, Field(ge=0, le=MAX_REQUEST_ID)]


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MessageHeader(_Header):
    k: Literal["msg"]
    t: Topic


class RequestHeader(_Header):
    k: Literal["req"]
    t: Topic
    id: RequestId


class ResponseHeader(_Header):
    k: Literal["res"]
    id: RequestId


class ErrorHeader(_Header):
    k: Literal["err"]
    id: RequestId
    code: Annotated[str, Field(pattern=ERROR_CODE_PATTERN)]
    message: Annotated[str, Field(max_length=MAX_ERROR_MESSAGE_CHARS)]


Header = MessageHeader | RequestHeader | ResponseHeader | ErrorHeader
_HEADER = TypeAdapter[Header](Annotated[Header, Field(discriminator="k")])


class FrameError(Exception):
    """A received frame that is refused; `reason` is "oversize", "version" or "malformed"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def is_topic(topic: object) -> bool:
    return isinstance(topic, str) and _TOPIC_RE.fullmatch(topic) is not None


def is_error_code(code: object) -> bool:
    return isinstance(code, str) and _ERROR_CODE_RE.fullmatch(code) is not None


def _frame(header: dict[str, object], payload: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode("ascii")
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"frame header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    return bytes((FRAME_VERSION,)) + len(head).to_bytes(2, "big") + head + payload


def encode_message(topic: str, payload: bytes) -> bytes:
    if not is_topic(topic):
        raise ValueError(f"bad topic {topic!r}: must match {TOPIC_PATTERN}")
    return _frame({"k": "msg", "t": topic}, payload)


def encode_request(topic: str, request_id: int, payload: bytes) -> bytes:
    if not is_topic(topic):
        raise ValueError(f"bad topic {topic!r}: must match {TOPIC_PATTERN}")
    return _frame({"k": "req", "t": topic, "id": request_id}, payload)


def encode_response(request_id: int, payload: bytes) -> bytes:
    return _frame({"k": "res", "id": request_id}, payload)


def encode_error(request_id: int, code: str, message: str) -> bytes:
    if not is_error_code(code):
        raise ValueError(f"bad error code {code!r}: must match {ERROR_CODE_PATTERN}")
    return _frame({"k": "err", "id": request_id, "code": code,
                   "message": message[:MAX_ERROR_MESSAGE_CHARS]}, b"")


def decode_frame(data: bytes, max_frame_bytes: int) -> tuple[Header, bytes]:
    """Split and validate one received frame; raises FrameError, never anything else."""
    if len(data) > max_frame_bytes:
        raise FrameError("oversize", f"frame of {len(data)} bytes exceeds {max_frame_bytes}")
    if len(data) < _PREFIX_BYTES:
        raise FrameError("malformed", "frame shorter than its fixed prefix")
    if data[0] != FRAME_VERSION:
        raise FrameError("version", f"frame version {data[0]} is not {FRAME_VERSION}")
    head_len = int.from_bytes(data[1:3], "big")
    if not 0 < head_len <= MAX_HEADER_BYTES or _PREFIX_BYTES + head_len > len(data):
        raise FrameError("malformed", f"bad header length {head_len}")
    try:
        header = _HEADER.validate_json(data[_PREFIX_BYTES:_PREFIX_BYTES + head_len])
    except ValidationError as exc:
        raise FrameError("malformed", f"bad header: {exc.error_count()} validation error(s)") from exc
    payload = data[_PREFIX_BYTES + head_len:]
    if isinstance(header, ErrorHeader) and payload:
        raise FrameError("malformed", "an error frame carries no payload")
    return header, payload
