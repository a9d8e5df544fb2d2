"""Worker processes for signature checks: their own interpreters, so their own GILs.

A verify *thread* releases the GIL inside each Ed25519 check but must take it back between checks;
while the event loop is busy that wait (up to the interpreter's switch interval) dominates, and a
single validator measured about 4,700 tx/s with two threads against about 6,900 with two
processes (docs/benchmarks.md). Workers are started on first use with the `spawn` method (no
fork of a threaded process) and die with the node: each asks the kernel for SIGKILL when its
parent exits (Linux `PR_SET_PDEATHSIG`), so a node killed with `kill -9` leaves none behind.

The pool's semaphores are watched by multiprocessing's resource tracker, a helper process that
removes them when the node dies. After a `kill -9` it did so with a "leaked semaphore objects"
warning in the node's log, which reads like a fault but is the clean-up working; the tracker is
started with that one warning filtered out.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
# The tracker's interpreter gets this process's -W options (multiprocessing passes sys.warnoptions on).
_QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


def signature_workers(count: int) -> ProcessPoolExecutor:
    """A pool of `count` worker processes tied to this process's lifetime."""
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)
    return ProcessPoolExecutor(count, multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))
