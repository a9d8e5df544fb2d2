"""Deliberately broken BFT engines: the simulator must catch each of them.

They exist to prove the checkers bite. Each breaks one rule that safety or liveness needs; the one
with a smaller quorum comes with the certificate rule that matches it, so that what the simulator
reports is the disagreement itself, not merely a certificate that is too small.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from consensus.api import Action, EngineContext, Event, Tick, Verifier
from consensus.bft.certificate import check_certificate
from consensus.bft.engine import BftEngine
from consensus.bft.messages import Claim, Message
from consensus.bft.rounds import ProposerSchedule, max_faulty, proposer_index
from ledger.block import Block


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


class NeverChangesRound(BftEngine):
    """Never leaves a round on timeout: safe, but a dead proposer stalls the chain for ever."""

    def step(self, event: Event) -> list[Action]:
        if isinstance(event, Tick):
            return []
        return super().step(event)


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
