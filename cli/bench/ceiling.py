"""The limit a run is measured against: Ed25519 verifications per second per core on this machine.

Every transaction's signature is checked at least once, and on two cores shared by a whole cluster
that check is the largest single cost, so (verifications a core does per second) x (cores) / (how
many times the setup checks each transaction) is the most the setup could commit if nodes did
nothing else. `calibrate` measures the rate in the run itself, with PyNaCl over real transaction
signatures, as the nodes verify them; `ceiling_tps` and `share` are the arithmetic
(docs/benchmarks.md, "Ceilings", says how each setup's divisor follows from the code).
"""

from __future__ import annotations

import os
import time

from ledger import keys
from ledger.tx import Transfer, sign_tx

CALIBRATION_SLICES = 5
CALIBRATION_SLICE_S = 0.3
CALIBRATION_TXS = 64


def cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def verify_rate_per_core(slices: int = CALIBRATION_SLICES, slice_s: float = CALIBRATION_SLICE_S) -> float:
    """Ed25519 verifications per second on one core: the best of `slices` slices of `slice_s` seconds,
    each checking real signed transfers in a loop (the best slice is the one least disturbed by other
    processes on a shared machine)."""
    signer = keys.PrivateKey.generate()
    txs = [sign_tx(signer, "calibration", nonce, Transfer(signer.address, "LDG", 1))
           for nonce in range(CALIBRATION_TXS)]
    items = [(t.sender, t.signature, t.signing_bytes) for t in txs]
    best = 0.0
    for _ in range(slices):
        done = 0
        started = time.process_time()
        wall = time.perf_counter()
        while time.perf_counter() - wall < slice_s:
            for address, signature, data in items:
                if not keys.verify(address, signature, data):
                    raise AssertionError("a calibration signature did not verify")
            done += len(items)
        # CPU time, not wall time: a slice during which another process held the core is not slower.
        used = time.process_time() - started
        if used > 0:
            best = max(best, done / used)
    return best


def verifications_per_tx(consensus: str, validators: int, catch_up: bool = False) -> int:
    """How many times the setup checks each committed transaction's signature, machine-wide.

    PBFT: every validator verifies every transaction it admits, from a client or from a peer's
    gossip (a Byzantine peer is not believed), so n. Raft: a node takes its peers' gossip on trust
    (crash faults only), so only the node a client sent the transaction to verifies it: 1. One
    validator: 1. Catch-up: the one node replaying the chain verifies every signature: 1.
    """
    if catch_up or validators <= 1:
        return 1
    if consensus == "raft":
        return 1
    if consensus == "pbft":
        return validators
    raise ValueError(f"no ceiling for consensus {consensus!r}")


def ceiling_tps(verify_per_s_per_core: float, core_count: int, consensus: str, validators: int,
                catch_up: bool = False) -> float:
    """Committed tx/s if the machine's cores did nothing but the setup's signature checks."""
    return verify_per_s_per_core * core_count / verifications_per_tx(consensus, validators, catch_up)


def share(committed_tps: float, ceiling: float) -> float | None:
    """The fraction of the ceiling reached (0.42 for 42%), None when there is no ceiling."""
    return committed_tps / ceiling if ceiling > 0 else None
