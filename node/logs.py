"""Structured logging: plain text for people (the default) or one JSON object per line for machines.

Every line carries the node id and the node's current height. The node context comes from
`bind_node(...)`, which sets a context variable: tasks created afterwards (the node's task group,
the HTTP server's handlers) inherit it, so several nodes in one process each stamp their own lines.
A handler installed for a single-node process (`ledgerd start`) also takes a fallback context for
lines logged outside any node task (library threads, start-up).

Extra structured fields travel as `logger.info("...", extra={"fields": {"peer": p, "round": r}})`;
the plain format appends them as `key=value`, the JSON format as keys of the object.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _no_height() -> int | None:
    return None


@dataclass(frozen=True)
class NodeLogContext:
    """Who is logging: the node id, and a cheap callable that reads its current committed height."""

    node_id: str
    height: Callable[[], int | None] = field(default=_no_height)

    def current_height(self) -> int | None:
        try:
            return self.height()
        except Exception:  # a log line must never fail because the node is half-built or closing
            return None


# A context variable is per task context, not per process: it is what lets many nodes share a process.
_node_context: contextvars.ContextVar[NodeLogContext | None] = contextvars.ContextVar(
    "ledgerd_node_log_context", default=None)


def bind_node(context: NodeLogContext) -> contextvars.Token[NodeLogContext | None]:
    """Make `context` the node of every line logged from here and from tasks created after this call."""
    return _node_context.set(context)


def unbind_node(token: contextvars.Token[NodeLogContext | None]) -> None:
    _node_context.reset(token)


class NodeContextFilter(logging.Filter):
    """Stamps `node_id` and `height` on each record (unless the caller passed them in `extra`)."""

    def __init__(self, fallback: NodeLogContext | None = None) -> None:
        super().__init__()
        self.fallback = fallback

    def filter(self, record: logging.LogRecord) -> bool:
        context = _node_context.get() or self.fallback
        if not hasattr(record, "node_id"):
            record.node_id = context.node_id if context else "-"
        if not hasattr(record, "height"):
            record.height = context.current_height() if context else None
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, "fields", None)
    return value if isinstance(value, dict) else {}


def _iso_time(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


class PlainFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.123Z INFO  node=3f2a9c1b h=17 ledgerd.api: message key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        node_id = str(getattr(record, "node_id", "-"))
        height = getattr(record, "height", None)
        parts = [
            _iso_time(record.created),
            f"{record.levelname:<5}",
            f"node={node_id[:8]}",
            f"h={'-' if height is None else height}",
            f"{record.name}:",
            record.getMessage(),
        ]
        parts.extend(f"{key}={value}" for key, value in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, node_id, height, msg, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node_id": getattr(record, "node_id", "-"),
            "height": getattr(record, "height", None),
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, ensure_ascii=False)


def make_handler(fmt: str = "plain", stream: TextIO | None = None,
                 fallback: NodeLogContext | None = None) -> logging.Handler:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    handler.addFilter(NodeContextFilter(fallback))
    return handler


def configure(fmt: str = "plain", level: str = "info", stream: TextIO | None = None,
              fallback: NodeLogContext | None = None) -> logging.Handler:
    """Route every logger of this process through one ledgerd handler (for the CLI's own process).

    Replaces a handler installed by an earlier call, so calling it twice does not double lines.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "ledgerd_handler", False)]:
        root.removeHandler(old)
    handler = make_handler(fmt, stream, fallback)
    handler.ledgerd_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats what the request-latency metric already records, line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler
