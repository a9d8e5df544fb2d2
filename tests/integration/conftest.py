"""Fixtures shared by the integration tests."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """run_node is written for a process of its own: undo its signal and logging set-up afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        root.handlers[:] = handlers
        root.setLevel(level)
