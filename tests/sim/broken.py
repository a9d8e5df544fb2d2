"""Deliberately broken engines and node parts: the simulator must catch each of them.

They exist to prove the checkers bite. Each breaks one rule that safety or liveness needs; the one
with a smaller quorum comes with the certificate rule that matches it, so that what the simulator
reports is the disagreement itself, not merely a certificate that is too small.

Three break the node rather than the engine: a store whose block batches are not synced (a crash
loses a block the node already acknowledged), a core that lets an action list's messages leave
before its `Persist` (a crash in between makes the node forget what it just signed), and a core
that shrugs off a failed durable write and goes on instead of halting.

Two get validator-set changes wrong (run with `--valset`): an engine that keeps the quorum of the set
it started with after a change, and one node whose reader of each height's set puts a change in
force one height late.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from consensus.api import Action, Broadcast, ChainAdvanced, EngineContext, Event, Send, Tick, Verifier
from consensus.bft.certificate import check_certificate
from consensus.bft.engine import BftEngine, _coalesce_persists
from consensus.bft.messages import Claim, Message
from consensus.bft.rounds import ProposerSchedule, max_faulty, proposer_index
from ledger.block import Block
from node.core.machine import NodeCore
from node.core.validators import ValidatorSets
from storage import KeyValueStore, StorageError, WriteBatch
from storage.store import BLOCK


class CommitsOnTwoF(BftEngine):
    """Counts 2f matching votes as a quorum instead of 2f + 1: two quorums need not overlap in an
    honest validator any more, so an equivocating proposer can get two blocks committed."""

    def quorum(self, n: int) -> int:
        return max(1, 2 * max_faulty(n))


def verify_two_f_certificate(
    block: Block, certificate: Any, validators: Sequence[str], verifier: Verifier,
) -> bool:
    two_f = max(1, 2 * max_faulty(len(validators)))
    return check_certificate(block, certificate, validators, verifier, two_f)


class IgnoresPreparedCertificate(BftEngine):
    """After a round change the proposer builds a fresh block even when a quorum member reports a
    prepared one, and replicas accept that: a block committed in an earlier round can be replaced."""

    def highest_prepared(self, claims: Sequence[Claim]) -> Claim | None:
        return None

    def check_reproposal(self, msg: Message) -> bool:
        return False


class ForgetsItsHardState(BftEngine):
    """Starts every incarnation from scratch, ignoring what it persisted: after a crash it may sign
    a second, different vote in a round it already voted in (equivocation by amnesia)."""

    def __init__(self, ctx: EngineContext) -> None:
        super().__init__(dataclasses.replace(ctx, restored={}))


class ChecksBeforeTheCommitIsStored(BftEngine):
    """Handles everything in the step that returns a Commit, the next height's buffered proposal
    included, so its BlockChecker is asked before the runtime has stored the block it builds on."""

    def step(self, event: Event) -> list[Action]:
        self._events.append(event)
        while self._events or self._queue:
            if self._events and (not self._queue or isinstance(self._events[0], ChainAdvanced)):
                self._dispatch(self._events.popleft())
            else:
                msg, direct = self._queue.popleft()
                if msg.height == self._hs.height:
                    self._handle(msg, direct)
        self._commit_returned = False
        out, self._out = self._out, []
        return _coalesce_persists(out)


class NeverAsksItsChecker(BftEngine):
    """Prepares whatever a proposer sends without executing it: a poisoned block (a wrong app_hash)
    gets a quorum, and the honest nodes' cores then cannot execute the block they committed."""

    def _block_acceptable(self, block: Block) -> bool:
        return True


class NeverChangesRound(BftEngine):
    """Never leaves a round on timeout: safe, but a dead proposer stalls the chain for ever."""

    def step(self, event: Event) -> list[Action]:
        if isinstance(event, Tick):
            return []
        return super().step(event)


class UnsyncedBlockBatches:
    """A store backend that writes block batches without sync=True: the commit is acknowledged while
    the block is only in the log, and a power loss before the next synced write takes it away."""

    def __init__(self, inner: KeyValueStore) -> None:
        self._inner = inner

    @property
    def location(self) -> str:
        return self._inner.location

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def get(self, key: bytes) -> bytes | None:
        return self._inner.get(key)

    def scan(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        return self._inner.scan(start, stop)

    def scan_keys(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[bytes]:
        return self._inner.scan_keys(start, stop)

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        is_block = any(key[:1] == BLOCK and len(key) == 9 for key, _ in batch.ops)
        self._inner.write(batch, sync=sync and not is_block)

    def close(self) -> None:
        self._inner.close()


class SendsBeforePersist(NodeCore):
    """Executes an action list's Send/Broadcast before its Persist: a vote leaves the node before the
    hard state that records it is durable."""

    def _step(self, event: Event) -> None:
        actions = self.engine.step(event)
        for action in actions:
            if isinstance(action, Send | Broadcast):
                self._execute(action)
        for action in actions:
            if not isinstance(action, Send | Broadcast):
                self._execute(action)


class ShrugsOffFailedWrites(NodeCore):
    """Treats a failed Persist or block write as a warning and goes on with the rest of the action list
    (the "log and ignore" the storage contract forbids)."""

    def _execute(self, action: Action) -> None:
        try:
            super()._execute(action)
        except StorageError:
            pass


class _PlainRotation(ProposerSchedule):
    def round0(self, height: int, n: int, recent: Sequence[int]) -> tuple[int, bool]:
        return proposer_index(height, 0, n), False


class NeverSkipsAProposer(BftEngine):
    """The plain rotation at round 0 too (the engine before the proposer schedule): safe, but every
    turn of a crashed validator waits out a round timeout."""

    def __init__(self, ctx: EngineContext) -> None:
        super().__init__(ctx, schedule=_PlainRotation())


class SchedulesFromItsOwnSeals(BftEngine):
    """Picks the proposer of every round among the validators whose commit seals are in the last
    certificate it holds. That is node-local input: each node keeps the quorum of seals it happened
    to collect, so nodes disagree about who proposes, in every round."""

    def __init__(self, ctx: EngineContext) -> None:
        self._sealed = list(range(len(ctx.validators)))
        super().__init__(ctx)

    def _decide(self, block: Block, round: int, votes: Mapping[int, bytes]) -> None:
        self._sealed = sorted(votes)
        super()._decide(block, round, votes)

    def _proposer(self, round: int) -> int:
        return self._sealed[(self._hs.height + round) % len(self._sealed)]


class KeepsTheOldQuorum(BftEngine):
    """Takes up each new validator set (its members, proposer order and this node's seat) but keeps
    counting the quorum of the set it started with, as if the quorum were a constant of the
    engine: after an add, blocks are decided by fewer votes than the new set's quorum."""

    def __init__(self, ctx: EngineContext, schedule: ProposerSchedule | None = None) -> None:
        self._first_quorum: int | None = None
        super().__init__(ctx, schedule=schedule)

    def quorum(self, n: int) -> int:
        if self._first_quorum is None:
            self._first_quorum = super().quorum(n)
        return self._first_quorum


class ActivatesOneHeightLate(ValidatorSets):
    """A node's reader of the set of each height that puts every change in force one height after
    the ledger rules do (as if it counted the delay from the block after the deciding one): for one
    height it decides, votes and checks certificates under the old set while the others use the
    new one."""

    def at(self, height: int) -> tuple[str, ...]:
        return super().at(max(1, height - 1))
