"""PBFT across a validator-set change: each height's proposer rotation and quorum come from the set
in force at that height (`EngineContext.validators_at`), certificates are made under that set, and
a node outside the set (an observer) starts to vote at the height its key enters it."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from consensus.api import ChainAdvanced, EngineContext
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


class ScheduledNet(Net):
    """Six engines over one seeded schedule: validators 0..3 at genesis, then at `at` one change:
    add 4, remove one of 0..3, or rotate one of 0..3 to 5 (its place in the order taken by 5)."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.kind = rng.choice(("add", "remove", "rotate"))
        self.at = rng.randint(2, 6)
        self.victim = rng.randrange(4)
        super().__init__(6)

    def set_at(self, height: int) -> list[str]:
        ids = self.ids
        if height < self.at:
            return ids[:4]
        if self.kind == "add":
            return ids[:5]
        if self.kind == "remove":
            return [v for i, v in enumerate(ids[:4]) if i != self.victim]
        return [ids[5] if i == self.victim else v for i, v in enumerate(ids[:4])]

    def make(self, i: int) -> BftEngine:
        tip = tip_of(self.chains[i][-1][0]) if self.chains[i] else GENESIS
        ctx = EngineContext(CHAIN, self.ids[:4], HmacSigner(self.ids[i]), self.verifier, self.checkers[i], tip,
                            random.Random(i), dict(self.disks[i]), CONFIG, validators_at=self.set_at)
        return BftEngine(ctx)

    def sync(self) -> None:
        """Block sync as the node does it: a node behind takes the certified blocks it lacks, each
        checked under the set in force at its height, then tells its engine (ChainAdvanced)."""
        longest = max(self.chains, key=len)
        for i, chain in enumerate(self.chains):
            missing = longest[len(chain):]
            if not missing:
                continue
            for block, cert in missing:
                assert verify_certificate(block, cert, self.set_at(block.height), self.verifier)
            chain.extend(missing)
            self.step(i, ChainAdvanced(tip_of(chain[-1][0]), tuple(b.header.proposer for b, _ in chain)))


@pytest.mark.parametrize("seed", range(int(os.environ.get("LEDGERD_VALSET_SEEDS", "40"))))
def test_seeded_changes_under_drops_and_restarts_keep_one_chain_of_valid_certificates(seed: int) -> None:
    """Agreement and certificates under the set in force at every height, through a change made
    while messages are dropped (a fifth of them, for a while) and engines restart from their disks;
    afterwards, with the network healed, the chain goes on."""
    net = ScheduledNet(seed)
    rng = random.Random(seed * 7919)
    faulty = True
    net.drop = lambda src, dst, msg: faulty and rng.random() < 0.2
    healed_at = 0
    for step in range(60):
        if step == 18:
            faulty = False
            healed_at = max(net.heights())
        if rng.random() < 0.15:
            i = rng.randrange(6)
            net.engines[i] = net.make(i)  # a restart: the engine rebuilt from its disk and chain
        net.txs_to_all()
        net.tick(3)
        net.sync()
    longest = max(net.chains, key=len)
    assert len(longest) >= max(net.at + 2, healed_at + 3), (net.kind, net.at, healed_at, net.heights())
    for chain in net.chains:
        for (block, cert), (theirs, _) in zip(chain, longest, strict=False):
            assert block.hash == theirs.hash  # agreement
            assert verify_certificate(block, cert, net.set_at(block.height), net.verifier)


def test_a_change_activated_at_different_heights_on_different_nodes_is_caught() -> None:
    """Deliberately broken: half the nodes take up the change one height late. Over the seeds the
    checks of the test above see it: a certificate not valid under the set in force, or the chain
    stopping short."""
    caught = 0
    for seed in range(20):
        net = ScheduledNet(seed)
        true_set = net.set_at
        late = {i for i in range(6) if i % 2 == 0}
        for i in range(6):
            def skewed(height: int, i: int = i, true_set: Callable[[int], list[str]] = true_set,
                       late: set[int] = late) -> list[str]:
                return true_set(height - 1 if i in late else height)
            tip = GENESIS
            ctx = EngineContext(CHAIN, net.ids[:4], HmacSigner(net.ids[i]), net.verifier, net.checkers[i], tip,
                                random.Random(i), {}, CONFIG, validators_at=skewed)
            net.engines[i] = BftEngine(ctx)
        for _ in range(40):
            net.txs_to_all()
            net.tick(3)
        longest = max(net.chains, key=len)
        bad_cert = any(not verify_certificate(b, c, true_set(b.height), net.verifier)
                       for chain in net.chains for b, c in chain)
        if bad_cert or len(longest) < net.at + 2:
            caught += 1
    assert caught >= 15, caught
