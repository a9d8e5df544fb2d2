"""`ledgerd start` makes the cyclic garbage collector cheap once the node runs (cli.start.tune_gc)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from cli.start import GC_THRESHOLDS, tune_gc


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Cell:
    def __init__(self) -> None:
        self.other: object = None


def test_tune_gc_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    gc.unfreeze()  # whatever an earlier in-process `ledgerd start` of the suite left
    gc.set_threshold(700, 10, 10)  # CPython's default
    alive = _Cell()
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert not any(obj is alive for obj in gc.get_objects())  # no longer scanned


def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_gc()
    a, b = _Cell(), _Cell()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
