"""PBFT across a validator-set change: each height's proposer rotation and quorum come from the set
in force at that height (`EngineContext.validators_at`), certificates are made under that set, and
a node outside the set (an observer) starts to vote at the height its key enters it."""

from __future__ import annotations

import random

from consensus.api import EngineContext
from consensus.bft import BftEngine, verify_certificate
from consensus.bft.rounds import proposer_index
from tests.unit.test_bft_engine import CHAIN, CONFIG, GENESIS, HmacSigner, Net, tip_of

CHANGE_AT = 4  # heights from 4 on: the fifth node joins


class ChangingNet(Net):
    """Five engines; node 4 is an observer until CHANGE_AT, then a validator (or `ids[:3]` remain
    after a removal, with `shrink`)."""

    def __init__(self, shrink: bool = False) -> None:
        self.shrink = shrink
        super().__init__(5)

    def set_at(self, height: int) -> list[str]:
        if self.shrink:
            return self.ids[:4] if height < CHANGE_AT else self.ids[:3]
        return self.ids[:4] if height < CHANGE_AT else self.ids[:5]

    def make(self, i: int) -> BftEngine:
        tip = tip_of(self.chains[i][-1][0]) if self.chains[i] else GENESIS
        ctx = EngineContext(CHAIN, self.ids[:4], HmacSigner(self.ids[i]), self.verifier, self.checkers[i], tip,
                            random.Random(i), dict(self.disks[i]), CONFIG, validators_at=self.set_at)
        return BftEngine(ctx)


def test_a_validator_added_at_a_height_votes_from_it_and_the_quorum_grows() -> None:
    net = ChangingNet()
    assert net.engines[4].status()["is_validator"] is False
    for _ in range(8):
        net.txs_to_all()
        net.tick(2)
    chain = net.chains[0]
    assert len(chain) >= 7
    for block, cert in chain:
        validators = net.set_at(block.height)
        assert block.header.proposer == validators[proposer_index(block.height, 0, len(validators))] \
            or cert["round"] > 0  # type: ignore[index]
        assert verify_certificate(block, cert, validators, net.verifier)
        seals = {s["validator"] for s in cert["seals"]}  # type: ignore[index, union-attr]
        if block.height < CHANGE_AT:
            assert net.ids[4] not in seals
        else:
            assert len(seals) >= 4  # the quorum of 5
    assert any(net.ids[4] in {s["validator"] for s in cert["seals"]}  # type: ignore[index, union-attr]
               for block, cert in chain if block.height >= CHANGE_AT)
    assert net.engines[4].status()["is_validator"] is True and net.engines[4].status()["quorum"] == 4
    # Node 4 (sent everything here, as an observer too) has the same chain.
    assert [b.hash for b, _ in net.chains[4]] == [b.hash for b, _ in chain][:len(net.chains[4])]


def test_after_a_removal_the_remaining_three_decide_with_the_smaller_quorum() -> None:
    net = ChangingNet(shrink=True)
    net.drop = lambda src, dst, msg: src == 3 and msg.height >= CHANGE_AT  # the removed node is gone
    for _ in range(8):
        net.txs_to_all()
        net.tick(2)
    chain = net.chains[0]
    assert len(chain) >= 7
    for block, cert in chain:
        assert verify_certificate(block, cert, net.set_at(block.height), net.verifier)
    assert net.engines[0].status()["validators"] == 3 and net.engines[3].status()["is_validator"] is False


class StaleSetEngine(BftEngine):
    """Deliberately broken: keeps the set (and quorum) of the height it started at for ever."""

    def _change_validators(self, height: int) -> None:
        return None


def test_the_certificate_check_catches_an_engine_that_keeps_the_old_quorum() -> None:
    """The check every verifier makes (block sync, proofs, the simulator's checker): a certificate
    must prove its block under the set in force at its height. An engine that keeps the old set's
    quorum after an add decides blocks that the new set's quorum never approved."""
    net = ChangingNet()
    net.engines = [StaleSetEngine(e._ctx) for e in net.engines]  # type: ignore[attr-defined]
    for _ in range(8):
        net.txs_to_all()
        net.tick(2)
    chain = net.chains[0]
    assert len(chain) >= CHANGE_AT
    caught = [block.height for block, cert in chain
              if not verify_certificate(block, cert, net.set_at(block.height), net.verifier)]
    assert caught and min(caught) == CHANGE_AT
