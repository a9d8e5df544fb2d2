"""The engine interface shared by every consensus engine, the runtime and the simulator."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger import keys
from ledger.block import Block
from ledger.tx import DecodeMemo


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The last committed block as the engine needs to know it (height 0 is genesis)."""

    height: int
    block_hash: str
    timestamp: int  # ms
    app_hash: str


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """One unit of logical time has passed (the runtime ticks every `tick_ms`)."""


@dataclass(frozen=True, slots=True)
class Received:
    """Bytes from an authenticated peer `sender` (a validator node id); contents untrusted."""

    sender: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TxsAvailable:
    """The mempool holds transactions ready for a proposal."""


@dataclass(frozen=True, slots=True)
class ProposalBuilt:
    """Answer to `BuildProposal`; `block` is None when there was nothing worth proposing."""

    height: int
    round: int
    block: Block | None


@dataclass(frozen=True, slots=True)
class ChainAdvanced:
    """The caller committed blocks it fetched by block sync; `tip` is the new last block.

    `proposers`: the `header.proposer` of the blocks committed since the engine's last height,
    oldest first, ending with `tip`'s (more, reaching further back, is fine). An engine whose
    proposer schedule reads the chain (BFT) needs them to keep computing the schedule every other
    node computes; without them it falls back to what it can still tell, at a cost in liveness only.
    """

    tip: ChainTip
    proposers: tuple[str, ...] = ()


Event = Tick | Received | TxsAvailable | ProposalBuilt | ChainAdvanced


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Persist:
    """Write these engine records durably (one synced batch) before executing later actions."""

    puts: Mapping[str, bytes] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Send:
    to: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send to every other validator."""

    data: bytes


@dataclass(frozen=True, slots=True)
class BuildProposal:
    height: int
    round: int
    parent: ChainTip


@dataclass(frozen=True, slots=True)
class Commit:
    """`block` is final; `certificate` proves it to anyone holding the validator set."""

    block: Block
    certificate: dict[str, Any]


Action = Persist | Send | Broadcast | BuildProposal | Commit


# --- what engines are given ---------------------------------------------------------------------


class Signer(Protocol):
    node_id: str

    def sign(self, data: bytes) -> bytes: ...


class Verifier(Protocol):
    def verify(self, node_id: str, data: bytes, signature: bytes) -> bool: ...


class BlockChecker(Protocol):
    def check_block(self, block: Block, parent: ChainTip) -> str | None:
        """None when `block` is a valid successor of `parent`, else the reason it is not.

        Checks everything that needs state: signatures, nonces, execution and app_hash,
        timestamp against the local clock. Must be deterministic for a given block and state.
        """
        ...


@dataclass(frozen=True)
class EngineConfig:
    """Timing in ticks (the runtime's tick is `tick_ms`, 50 ms by default) and limits."""

    round_timeout_ticks: int = 40  # BFT: round 0 timeout; doubles each round up to the max
    # BFT: round 0's timeout, until a valid proposal arrives, when its proposer is being retried after
    # missed turns (a crashed validator's retries then cost this, not a full round timeout)
    retry_round_timeout_ticks: int = 10
    max_round_timeout_ticks: int = 640
    election_timeout_min_ticks: int = 6  # Raft: randomized in [min, max)
    election_timeout_max_ticks: int = 12
    heartbeat_ticks: int = 1
    max_future_heights: int = 10  # buffer messages at most this many heights ahead
    max_buffered_messages: int = 4096
    # Messages buffered for future heights, in bytes as received (a proposal or a prepared round
    # change carries a whole block). Each validator may hold at most its share, the smaller of the
    # per-author value and the total divided by the validator count, so that the f faulty ones
    # cannot crowd out the others; the per-author default is four maximum-size blocks. A share
    # below one maximum-size message means such proposals are not buffered (block sync catches up).
    max_buffered_bytes: int = 128 * 1024 * 1024
    max_buffered_bytes_per_author: int = 32 * 1024 * 1024
    max_block_bytes: int = 8 * 1024 * 1024


class Rng(Protocol):
    """The randomness an engine may use: a seeded `random.Random` handed in by the caller (never the
    module-level functions), so a simulation seed replays exactly. Named structurally so that this
    pure package needs no import of the `random` module."""

    def randrange(self, start: int, stop: int) -> int: ...

    def random(self) -> float: ...


@dataclass
class EngineContext:
    """Everything an engine is constructed from; the same for every engine."""

    chain_id: str
    validators: Sequence[str]
    signer: Signer
    verifier: Verifier
    checker: BlockChecker
    tip: ChainTip
    rng: Rng  # a random.Random
    restored: Mapping[str, bytes]  # the engine's records as last persisted (empty on first start)
    config: EngineConfig = field(default_factory=EngineConfig)
    # The node's memo of decoded transactions: a proposal's transactions were mostly met in gossip.
    decode_memo: DecodeMemo | None = None
    # `header.proposer` of the last committed blocks, oldest first, ending with `tip`'s: as many as
    # `consensus.factory.history_blocks` says the engine reads (fewer only near genesis).
    recent_proposers: Sequence[str] = ()
    # The validator set in force at a height, for heights up to the tip's + 2, on a chain whose set
    # changes by governance (`ledger.valset`); None: `validators` at every height.
    validators_at: Callable[[int], Sequence[str]] | None = None


class Engine(Protocol):
    counters: dict[str, int]

    def step(self, event: Event) -> list[Action]: ...

    def status(self) -> dict[str, Any]:
        """A JSON-able summary for /v1/status (round, leader, term, ...)."""
        ...


class Ed25519Signer:
    """Signs with a node's Ed25519 key."""

    def __init__(self, key: keys.PrivateKey) -> None:
        self._key = key
        self.node_id = key.address

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class Ed25519Verifier:
    def verify(self, node_id: str, data: bytes, signature: bytes) -> bool:
        return keys.verify(node_id, signature, data)
