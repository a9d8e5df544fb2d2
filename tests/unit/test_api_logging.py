"""Structured logging: every line names its node and height, in plain or JSON form, and several nodes
in one process each stamp their own lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from node import logs

NODE_A = "a" * 64
NODE_B = "b" * 64


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("test.ledgerd.logs")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.handlers.clear()


def attach(log: logging.Logger, fmt: str, fallback: logs.NodeLogContext | None = None) -> io.StringIO:
    stream = io.StringIO()
    log.handlers.clear()
    log.addHandler(logs.make_handler(fmt, stream, fallback))
    return stream


def test_plain_lines_carry_node_height_and_fields(logger: logging.Logger) -> None:
    height = [7]
    stream = attach(logger, "plain", logs.NodeLogContext(NODE_A, lambda: height[0]))
    logger.info("committed block", extra={"fields": {"txs": 3}})
    height[0] = 8
    logger.warning("slow peer")
    first, second = stream.getvalue().splitlines()
    assert "INFO" in first and "node=aaaaaaaa" in first and "h=7" in first
    assert first.endswith("test.ledgerd.logs: committed block txs=3")
    assert "h=8" in second and "WARNING" in second


def test_json_lines_are_one_object_each(logger: logging.Logger) -> None:
    stream = attach(logger, "json", logs.NodeLogContext(NODE_A, lambda: 12))
    logger.info("submitted %d txs", 2, extra={"fields": {"peer": "p1"}})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert len(lines) == 2
    assert lines[0] == {"ts": lines[0]["ts"], "level": "info", "logger": "test.ledgerd.logs",
                        "node_id": NODE_A, "height": 12, "msg": "submitted 2 txs", "peer": "p1"}
    assert lines[1]["level"] == "error" and "ValueError: boom" in lines[1]["exc"]
    # The traceback lives inside the JSON string; the stream holds exactly two lines.
    assert len(stream.getvalue().splitlines()) == 2


def test_lines_without_a_node_say_so(logger: logging.Logger) -> None:
    stream = attach(logger, "json")
    logger.info("before any node")
    line = json.loads(stream.getvalue())
    assert (line["node_id"], line["height"]) == ("-", None)


def test_a_failing_height_reader_does_not_break_logging(logger: logging.Logger) -> None:
    def broken() -> int:
        raise RuntimeError("store closed")

    stream = attach(logger, "plain", logs.NodeLogContext(NODE_A, broken))
    logger.info("still logs")
    assert "h=-" in stream.getvalue()


async def test_nodes_sharing_a_process_stamp_their_own_lines(logger: logging.Logger) -> None:
    stream = attach(logger, "json")

    async def node_task(node_id: str, height: int) -> None:
        logs.bind_node(logs.NodeLogContext(node_id, lambda: height))
        child = asyncio.create_task(asyncio.sleep(0))  # tasks created later inherit the binding
        await child
        logger.info("tick")

    await asyncio.gather(node_task(NODE_A, 1), node_task(NODE_B, 2))
    stamped = {(o["node_id"], o["height"]) for o in map(json.loads, stream.getvalue().splitlines())}
    assert stamped == {(NODE_A, 1), (NODE_B, 2)}


def test_configure_twice_installs_one_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        logs.configure("plain", "info", io.StringIO())
        logs.configure("json", "debug", io.StringIO())
        ours = [h for h in root.handlers if getattr(h, "ledgerd_handler", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = before
        root.setLevel(level)


def test_bad_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError):
        logs.make_handler("xml")
    with pytest.raises(ValueError):
        logs.configure("plain", "loud")
