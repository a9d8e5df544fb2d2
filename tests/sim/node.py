"""One simulated validator: the node's real parts, rebuilt on every restart over a disk that outlives them.

A `SimNode` is what survives a crash (its `storage.MemoryDisk`, its identity and signing key, what
its commit listener acknowledged, the metrics registry) plus, while it is up, a `node.core.NodeCore`
built exactly as the daemon builds it: a `Store` over a handle on the disk, the real `Mempool`, the
real `BlockExecutor` (on the simulator's clock) and the engine restored from the store's records.

The handle the store writes through (`SimBackend`) is where the simulator reaches into the node:
it counts writes so that a crash can land halfway through an action list (it raises `SimCrash`,
which only the world catches), it remembers the first failed disk operation (the node must halt on
it), and it reports as a violation any use of the disk after that failure: a node that swallowed a
failed write and went on would be caught on its next write. The transport does the same for sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from consensus.api import ChainTip, Engine
from ledger.block import Block
from node.core.executor import BlockExecutor
from node.core.machine import CommittedBlock, NodeCore
from node.core.validators import ValidatorSets
from node.metrics import NodeMetrics
from storage import DiskError, KeyValueStore, MemoryDisk, Store, WriteBatch
from tests.sim.crypto import HmacSigner
from tests.sim.engines import Adversary


class Violation(Exception):
    """A checker failed: `kind` is the checker's name, the message says what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class SimCrash(Exception):
    """Simulator only: the node dies at this point (a crash halfway through an action list)."""


@dataclass(eq=False)
class SimNode:
    index: int
    id: str
    name: str
    signer: HmacSigner
    adversary: Adversary | None
    disk: MemoryDisk
    metrics: NodeMetrics
    rng: Any  # the engine's random.Random, derived from the seed and handed to each incarnation
    core: NodeCore | None = None
    checker: CountingChecker | None = None
    backend: SimBackend | None = None  # the handle its store writes through, while it is up
    valsets: ValidatorSets | None = None  # its reader of each height's set (chains with a committee)
    # What the commit listener acknowledged, in height order: nothing of it may be lost by a crash.
    chain: list[tuple[Block, dict[str, Any]]] = field(default_factory=list)
    consensus_commits: int = 0
    synced_commits: int = 0
    decided_after_heal: int = 0  # consensus commits of heights above the best one at the heal
    crash_countdown: int | None = None  # writes and sends left before a pending mid-step crash
    pending_down_ticks: int | None = None
    down_forever: bool = False
    disk_error: str | None = None  # the first failed disk operation: the node must halt on it
    disk_write_failed: bool = False  # that operation was a write (or its sync), not a read
    halted: str | None = None  # why it halted for good

    @property
    def honest(self) -> bool:
        return self.adversary is None

    @property
    def engine(self) -> Engine | None:
        return self.core.engine if self.core is not None else None

    @property
    def height(self) -> int:
        """The acknowledged height (the store's head, while the node is up)."""
        return len(self.chain)

    def tip(self) -> ChainTip | None:
        return self.core.store.tip if self.core is not None else None

    def before_write_or_send(self) -> None:
        if self.disk_error is not None:
            raise Violation("halt", f"{self.name} went on writing or sending after a failed disk operation "
                            f"({self.disk_error}): it must halt")
        if self.crash_countdown is not None:
            if self.crash_countdown == 0:
                raise SimCrash(self.name)
            self.crash_countdown -= 1


class SimBackend:
    """The node's `KeyValueStore`: the disk's handle, watched (see the module docstring)."""

    def __init__(self, inner: KeyValueStore, node: SimNode) -> None:
        self._inner = inner
        self._node = node

    @property
    def location(self) -> str:
        return self._inner.location

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def _failed(self, exc: DiskError, writing: bool = False) -> None:
        if self._node.disk_error is None:
            self._node.disk_error = str(exc)
            self._node.disk_write_failed = writing

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._inner.get(key)
        except DiskError as exc:
            self._failed(exc)
            raise

    def scan(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        try:
            yield from self._inner.scan(start, stop)
        except DiskError as exc:
            self._failed(exc)
            raise

    def scan_keys(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[bytes]:
        try:
            yield from self._inner.scan_keys(start, stop)
        except DiskError as exc:
            self._failed(exc)
            raise

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        self._node.before_write_or_send()
        try:
            self._inner.write(batch, sync=sync)
        except DiskError as exc:
            self._failed(exc, writing=True)
            raise

    def close(self) -> None:
        self._inner.close()


class SimTransport:
    """The node's side of the simulated network: each send may be where a pending crash lands."""

    def __init__(self, node: SimNode, send: Callable[[SimNode, str | None, bytes], None]) -> None:
        self._node = node
        self._send = send

    def send(self, peer: str, data: bytes) -> None:
        self._node.before_write_or_send()
        self._send(self._node, peer, data)

    def broadcast(self, data: bytes) -> None:
        self._node.before_write_or_send()
        self._send(self._node, None, data)


class SimListener:
    """The node's commit listener: the world's checkers hear every acknowledged commit."""

    def __init__(self, node: SimNode, on_commit: Callable[[SimNode, CommittedBlock], None]) -> None:
        self._node = node
        self._on_commit = on_commit

    def on_commit(self, committed: CommittedBlock) -> None:
        self._on_commit(self._node, committed)

    def on_dropped(self, dropped: Any) -> None:
        pass  # nobody waits on a simulated transaction


class CountingChecker:
    """The engine's `BlockChecker`: the node's executor, with a count of how often each block was asked
    about (an engine may promise to ask once per distinct block), and a check that the engine asks
    only about blocks on the store's committed head: the executor can judge nothing else, and an
    engine that asks before the runtime has stored its last decision gets a refusal it may keep."""

    def __init__(self, executor: BlockExecutor, store: Store, node: str) -> None:
        self._executor = executor
        self._store = store
        self._node = node
        self.calls: dict[str, int] = {}
        self.repeated: str | None = None  # a block hash checked more than once

    def check_block(self, block: Block, parent: ChainTip) -> str | None:
        self.calls[block.hash] = self.calls.get(block.hash, 0) + 1
        if self.calls[block.hash] > 1:
            self.repeated = block.hash
        head = self._store.tip
        if parent.height != head.height or parent.block_hash != head.block_hash:
            raise Violation("checker_parent", f"{self._node}'s engine asked about block {block.height} on "
                            f"parent {parent.height} while its store's head is {head.height}")
        return self._executor.check_block(block, parent)
