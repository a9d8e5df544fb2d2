"""Loopback port ranges for multi-node tests, and polling with a deadline instead of sleeping.

Ports are taken from *below* the kernel's ephemeral range (ip_local_port_range): a port the kernel
handed out for `bind(0)` sits in that range, and any outgoing connection (a p2p dial, a docker proxy,
another test's client) may later pick the same number as its local port, so a range chosen there can
be taken between the check and the node's own bind. Ports below the range are only ever taken by an
explicit bind. Within one test process, ranges handed out are never reused.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_LOWEST = 20000
_claimed: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _all_free(ports: list[int]) -> bool:
    if _claimed.intersection(ports):
        return False
    try:
        for port in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _pick(ports_for: Callable[[int], list[int]], span: int) -> list[int]:
    high = _ephemeral_low() - span - 1
    if high <= _LOWEST:
        raise AssertionError("the ephemeral port range leaves no room for test ports")
    rng = random.Random()
    for _ in range(500):
        ports = ports_for(rng.randrange(_LOWEST, high))
        if _all_free(ports):
            _claimed.update(ports)
            return ports
    raise AssertionError("no free port range below the ephemeral range")


def free_base_port(validators: int = 4, observers: int = 0) -> int:
    """A base port P whose REST (P+k) and p2p (P+1000+k) ports are all free right now, and those of
    `ledgerd testnet --observers` (REST P+100+k, p2p P+1100+k)."""
    ports = _pick(lambda base: [base + k for k in range(validators)]
                  + [base + 1000 + k for k in range(validators)]
                  + [base + 100 + k for k in range(observers)]
                  + [base + 1100 + k for k in range(observers)], 1100 + max(validators, observers))
    return ports[0]


def free_ports(count: int) -> list[int]:
    """`count` consecutive ports, free right now and below the ephemeral range."""
    return _pick(lambda base: list(range(base, base + count)), count)


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy; fail clearly at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)
