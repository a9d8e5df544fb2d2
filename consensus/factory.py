"""Engine selection by the `consensus` name in genesis: build an engine, verify a certificate.

To add an engine, register it in `ENGINES` with its constructor and its certificate verifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from consensus import bft, raft
from consensus.api import Engine, EngineContext, Verifier
from consensus.bft.rounds import ProposerSchedule
from ledger.block import Block


class EngineKind(NamedTuple):
    make: Callable[[EngineContext], Engine]
    verify_certificate: Callable[[Block, Any, Sequence[str], Verifier], bool]
    # The fault model. Byzantine (False): a validator may lie, so every node checks every signature
    # itself. Crash-only (True): validators are trusted not to lie, so a transaction a peer
    # gossips was verified by the validator that took it from the client, and is not checked again.
    trusts_validators: bool
    # How many of the last committed blocks' proposers the engine reads (`EngineContext.recent_proposers`),
    # for n validators.
    history_blocks: Callable[[int], int] = lambda n: 0
    # (height, block bytes) of a received engine message that carries a block whose transactions'
    # signatures the node must check, else None; None for an engine that checks none of them.
    carried_block: Callable[[bytes], tuple[int, bytes] | None] | None = None


# Read-only: one registry for every node in the process.
ENGINES: Mapping[str, EngineKind] = MappingProxyType({
    "pbft": EngineKind(bft.BftEngine, bft.verify_certificate, trusts_validators=False,
                       history_blocks=ProposerSchedule().window_blocks, carried_block=bft.carried_block),
    "raft": EngineKind(raft.RaftEngine, raft.verify_certificate, trusts_validators=True),
})


def _kind(kind: str) -> EngineKind:
    try:
        return ENGINES[kind]
    except KeyError:
        raise ValueError(f"unknown consensus engine {kind!r}; known: {', '.join(sorted(ENGINES))}") from None


def make_engine(kind: str, ctx: EngineContext) -> Engine:
    """A new engine of `kind` ("pbft", ...) built from `ctx`."""
    return _kind(kind).make(ctx)


def trusts_validators(kind: str) -> bool:
    """True when engine `kind` assumes crash faults only, so validators' word is taken (see `EngineKind`)."""
    return _kind(kind).trusts_validators


def carried_block_reader(kind: str) -> Callable[[bytes], tuple[int, bytes] | None] | None:
    """How to find the block a received message of engine `kind` carries (see `EngineKind`)."""
    return _kind(kind).carried_block


def history_blocks(kind: str, n: int) -> int:
    """How many recent proposers engine `kind` with `n` validators wants in `EngineContext.recent_proposers`."""
    return _kind(kind).history_blocks(n)


def verify_certificate(kind: str, block: Block, certificate: Any, validators: Sequence[str],
                       verifier: Verifier) -> bool:
    """True when `certificate` proves `block` final under `validators` for engine `kind`.

    Never raises for a malformed certificate (that is simply not valid); an unknown `kind` is a
    configuration error and raises ValueError.
    """
    return _kind(kind).verify_certificate(block, certificate, validators, verifier)
