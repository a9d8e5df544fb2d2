"""Fixtures shared by the integration tests."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """run_node is written for a process of its own: undo its signal, logging and garbage-collector
    set-up (`cli.start.tune_gc`) afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    thresholds = gc.get_threshold()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        root.handlers[:] = handlers
        root.setLevel(level)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
