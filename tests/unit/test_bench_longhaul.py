"""The long-haul report names the code it measured: the commit the nodes started on, and the one
HEAD moved to when it moved during the run."""

from __future__ import annotations

from cli.bench.longhaul import code_measured


def test_the_report_names_the_starting_commit_and_a_moved_head() -> None:
    assert code_measured("a981df0", None) == "at commit `a981df0`"
    assert code_measured("a981df0", "a981df0") == "at commit `a981df0`"
    moved = code_measured("3c942cb", "506ab1a")
    assert moved.startswith("at commit `3c942cb`") and "`506ab1a`" in moved and "restarted" in moved
