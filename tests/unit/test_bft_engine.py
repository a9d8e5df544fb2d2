"""The BFT engine, one rule at a time, on a tiny in-memory network of engines."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import tracemalloc
from collections import deque
from collections.abc import Callable

import pytest

from consensus import factory
from consensus.api import (
    Action,
    Broadcast,
    BuildProposal,
    ChainAdvanced,
    ChainTip,
    Commit,
    Ed25519Signer,
    Ed25519Verifier,
    EngineConfig,
    EngineContext,
    Event,
    Persist,
    ProposalBuilt,
    Received,
    Send,
    Tick,
    TxsAvailable,
)
from consensus.bft import BftEngine, verify_certificate
from consensus.bft.hardstate import STATE_KEY, decode_state
from consensus.bft.messages import ZERO_DIGEST, Claim, Kind, Message, Vote, decode, encode, sign
from consensus.bft.rounds import proposer_index
from ledger import keys
from ledger.block import Block, make_block

CHAIN = "chain-u"
GENESIS = ChainTip(0, "00" * 32, 1_000, "11" * 32)
CONFIG = EngineConfig(round_timeout_ticks=4, max_round_timeout_ticks=32, max_future_heights=4,
                      max_buffered_messages=64)


class HmacSigner:
    def __init__(self, node: str) -> None:
        self.node_id = node

    def sign(self, data: bytes) -> bytes:
        return hmac.digest(self.node_id.encode(), data, "sha256")


class HmacVerifier:
    def verify(self, node: str, data: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(node.encode(), data, "sha256"), signature)


class Checker:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.reject: set[str] = set()

    def check_block(self, block: Block, parent: ChainTip) -> str | None:
        self.calls.append(block.hash)
        return "rejected by test" if block.hash in self.reject else None


def node_ids(n: int) -> list[str]:
    return [hashlib.sha256(b"validator %d" % i).hexdigest() for i in range(n)]


def child(parent: ChainTip, proposer: str, salt: int = 0) -> Block:
    return make_block(CHAIN, parent.height + 1, parent.block_hash, parent.timestamp + 1 + salt, proposer, (),
                      hashlib.sha256(bytes.fromhex(parent.app_hash) + bytes([salt])).hexdigest())


def tip_of(block: Block) -> ChainTip:
    return ChainTip(block.height, block.hash, block.header.timestamp, block.header.app_hash)


class Net:
    """n engines, a FIFO network that can drop by predicate, disks and chains per node."""

    def __init__(self, n: int) -> None:
        self.ids = node_ids(n)
        self.verifier = HmacVerifier()
        self.checkers = [Checker() for _ in range(n)]
        self.disks: list[dict[str, bytes]] = [{} for _ in range(n)]
        self.chains: list[list[tuple[Block, dict[str, object]]]] = [[] for _ in range(n)]
        self.engines = [self.make(i) for i in range(n)]
        self.queue: deque[tuple[int, int, bytes]] = deque()
        self.sent: list[tuple[int, Message]] = []
        self.drop: Callable[[int, int, Message], bool] = lambda src, dst, msg: False
        self.log: list[tuple[int, list[Action]]] = []

    def make(self, i: int) -> BftEngine:
        tip = tip_of(self.chains[i][-1][0]) if self.chains[i] else GENESIS
        ctx = EngineContext(CHAIN, self.ids, HmacSigner(self.ids[i]), self.verifier, self.checkers[i], tip,
                            random.Random(i), dict(self.disks[i]), CONFIG)
        return BftEngine(ctx)

    def step(self, i: int, event: Event) -> list[Action]:
        pending: deque[Event] = deque([event])
        first: list[Action] = []
        while pending:
            actions = self.engines[i].step(pending.popleft())
            self.log.append((i, actions))
            first = first or actions
            for action in actions:
                if isinstance(action, Persist):
                    self.disks[i].update(action.puts)
                    for key in action.deletes:
                        self.disks[i].pop(key, None)
                elif isinstance(action, Broadcast):
                    self.sent.append((i, decode(action.data)))
                    self.queue.extend((i, j, action.data) for j in range(len(self.ids)) if j != i)
                elif isinstance(action, Send):
                    self.queue.append((i, self.ids.index(action.to), action.data))
                elif isinstance(action, BuildProposal):
                    built = child(action.parent, self.ids[i])
                    pending.append(ProposalBuilt(action.height, action.round, built))
                elif isinstance(action, Commit):
                    self.chains[i].append((action.block, action.certificate))
        return first

    def deliver(self, limit: int = 100_000) -> None:
        while self.queue and limit:
            limit -= 1
            src, dst, data = self.queue.popleft()
            if not self.drop(src, dst, decode(data)):
                self.step(dst, Received(self.ids[src], data))

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for i in range(len(self.engines)):
                self.step(i, Tick())
            self.deliver()

    def txs_to_all(self) -> None:
        for i in range(len(self.engines)):
            self.step(i, TxsAvailable())
        self.deliver()

    def heights(self) -> list[int]:
        return [len(c) for c in self.chains]

    def signed_as(self, author: int, kind: Kind, height: int, round: int, digest: str, **kw: object) -> bytes:
        return encode(sign(HmacSigner(self.ids[author]), CHAIN, kind, height, round, author, digest,
                           **kw))  # type: ignore[arg-type]

    def proposal(self, block: Block, round: int = 0, **kw: object) -> bytes:
        author = proposer_index(block.height, round, len(self.ids))
        return self.signed_as(author, Kind.PROPOSAL, block.height, round, block.hash,
                              block_bytes=block.encode(), **kw)


def broadcasts(actions: list[Action]) -> list[Message]:
    return [decode(a.data) for a in actions if isinstance(a, Broadcast)]


# --- a single validator drives a real chain ---------------------------------------------------------


def test_a_single_validator_commits_every_block_alone_with_real_ed25519() -> None:
    key = keys.PrivateKey.from_seed(b"\x07" * 32)
    checker = Checker()
    ctx = EngineContext(CHAIN, [key.address], Ed25519Signer(key), Ed25519Verifier(), checker, GENESIS,
                        random.Random(0), {}, CONFIG)
    engine = factory.make_engine("pbft", ctx)
    assert all(engine.step(Tick()) == [] for _ in range(100)), "an idle chain makes no blocks"
    tip = GENESIS
    for height in (1, 2, 3):
        (request,) = engine.step(TxsAvailable())
        assert request == BuildProposal(height, 0, tip)
        actions = engine.step(ProposalBuilt(height, 0, child(tip, key.address)))
        persist, commit = actions
        assert isinstance(persist, Persist) and isinstance(commit, Commit)
        assert verify_certificate(commit.block, commit.certificate, [key.address], Ed25519Verifier())
        tip = tip_of(commit.block)
    assert engine.status()["height"] == 4
    assert engine.step(TxsAvailable()) == [BuildProposal(4, 0, tip)]
    assert engine.step(ProposalBuilt(4, 0, None)) == [], "nothing to propose: wait for the next TxsAvailable"


# --- the normal case -----------------------------------------------------------------------------


def test_pre_prepare_prepare_commit_decides_a_block_with_a_quorum_certificate() -> None:
    net = Net(4)
    for _ in range(3):
        net.txs_to_all()
    assert net.heights() == [3, 3, 3, 3]
    for height in range(3):
        blocks = {c[height][0].hash for c in net.chains}
        assert len(blocks) == 1
        block, cert = net.chains[0][height]
        assert block.header.proposer == net.ids[proposer_index(height + 1, 0, 4)]
        assert verify_certificate(block, cert, net.ids, net.verifier)
        assert len(cert["seals"]) >= 3  # type: ignore[arg-type]


def test_the_block_checker_is_asked_once_per_distinct_block() -> None:
    net = Net(4)
    original = net.deliver

    def deliver_twice(limit: int = 100_000) -> None:
        net.queue.extend(list(net.queue))  # every message duplicated
        original(limit)

    net.deliver = deliver_twice  # type: ignore[method-assign]
    net.txs_to_all()
    assert net.heights() == [1, 1, 1, 1]
    for checker in net.checkers:
        assert len(checker.calls) == len(set(checker.calls)) == 1


def test_a_replica_validates_the_proposal_before_it_prepares() -> None:
    ids = node_ids(4)
    proposer = ids[proposer_index(1, 0, 4)]
    parent, app = GENESIS.block_hash, "33" * 32
    cases = [
        (make_block(CHAIN, 1, "22" * 32, 2_000, proposer, (), app), "block_does_not_extend_tip"),
        (make_block(CHAIN, 2, parent, 2_000, proposer, (), app), "block_does_not_extend_tip"),
        (make_block(CHAIN, 1, parent, GENESIS.timestamp, proposer, (), app), "block_does_not_extend_tip"),
        (make_block("chain-x", 1, parent, 2_000, proposer, (), app), "block_does_not_extend_tip"),
        (make_block(CHAIN, 1, parent, 2_000, ids[3], (), app), "wrong_block_proposer"),
        (child(GENESIS, proposer, salt=9), "block_rejected"),  # the BlockChecker says no
    ]
    for block, reason in cases:
        net = Net(4)
        net.checkers[0].reject.add(child(GENESIS, proposer, salt=9).hash)
        data = net.signed_as(1, Kind.PROPOSAL, 1, 0, block.hash, block_bytes=block.encode())
        assert broadcasts(net.step(0, Received(proposer, data))) == [], reason
        assert net.engines[0].counters[f"dropped_{reason}"] == 1, reason
        # The proposer had its one attempt at this round; a second block is not even decoded.
        good = child(GENESIS, proposer)
        assert broadcasts(net.step(0, Received(proposer, net.proposal(good)))) == []
        assert net.engines[0].counters["dropped_proposer_already_failed"] == 1
    net = Net(4)
    good = child(GENESIS, proposer)
    (prepare,) = broadcasts(net.step(0, Received(proposer, net.proposal(good))))
    assert (prepare.kind, prepare.digest) == (Kind.PREPARE, good.hash)


def test_a_relayed_proposal_with_spoiled_attachments_does_not_cost_the_proposer_its_round() -> None:
    """The block and justification are not covered by the proposer's signature; a relay may spoil them."""
    net = Net(4)
    proposer = net.ids[proposer_index(1, 0, 4)]
    good = child(GENESIS, proposer)
    other = child(GENESIS, proposer, salt=3)
    genuine = decode(net.proposal(good))
    spoiled = encode(dataclasses.replace(genuine, block_bytes=other.encode()))
    assert broadcasts(net.step(0, Received(net.ids[2], spoiled))) == []  # relayed by validator 2
    assert net.engines[0].counters["dropped_block_hash_mismatch"] == 1
    (prepare,) = broadcasts(net.step(0, Received(proposer, encode(genuine))))
    assert prepare.digest == good.hash


# --- bad input is dropped and counted, never raised --------------------------------------------------


def test_bad_messages_are_dropped_with_a_counter_and_change_nothing() -> None:
    net = Net(4)
    engine = net.engines[0]
    block = child(GENESIS, net.ids[1])
    prepare = net.signed_as(2, Kind.PREPARE, 1, 0, block.hash)
    tampered = bytearray(prepare)
    tampered[-12] ^= 1  # inside the signature
    outsider = encode(sign(HmacSigner("f" * 64), CHAIN, Kind.PREPARE, 1, 0, 2, block.hash))
    other_chain = encode(sign(HmacSigner(net.ids[2]), "chain-other", Kind.PREPARE, 1, 0, 2, block.hash))
    cases = [
        (b"", "malformed"),
        (b"\x00" * 40, "malformed"),
        (prepare[:-1], "malformed"),
        (b"x" * (CONFIG.max_block_bytes + 300_000), "oversize"),
        (other_chain, "wrong_chain"),
        (encode(sign(HmacSigner("e" * 64), CHAIN, Kind.PREPARE, 1, 0, 9, block.hash)), "non_validator"),
        (bytes(tampered), "bad_signature"),
        (outsider, "bad_signature"),
        (net.signed_as(2, Kind.PREPARE, 0, 0, block.hash), "stale_height"),
        (net.signed_as(2, Kind.PREPARE, 99, 0, block.hash), "far_future_height"),
        (net.signed_as(2, Kind.PREPARE, 1, 10_000, block.hash), "far_future_round"),
        (net.signed_as(3, Kind.PROPOSAL, 1, 0, block.hash, block_bytes=block.encode()), "not_proposer"),
        (net.signed_as(2, Kind.PROPOSAL, 1, 1, block.hash, block_bytes=block.encode(),
                       claims=(Claim(0, -1, ZERO_DIGEST, b"x" * 32),)), "justification_bad_signature"),
        (net.signed_as(2, Kind.DECIDED, 1, 0, block.hash, block_bytes=block.encode(),
                       votes=(Vote(0, b"s" * 32), Vote(1, b"s" * 32), Vote(3, b"s" * 32))),
         "certificate_bad_signature"),
    ]
    for data, reason in cases:
        before = dict(engine.counters)
        assert engine.step(Received(net.ids[2], data)) == [], reason
        assert engine.counters.get(f"dropped_{reason}", 0) == before.get(f"dropped_{reason}", 0) + 1, reason
    assert engine.step(Received(net.ids[2], prepare)) == []
    assert engine.step(Received(net.ids[2], prepare)) == []
    assert engine.counters["dropped_duplicate"] == 1
    equivocating = net.signed_as(2, Kind.PREPARE, 1, 0, "77" * 32)
    assert engine.step(Received(net.ids[2], equivocating)) == []
    assert engine.counters["dropped_equivocation"] == 1
    assert engine.status()["height"] == 1 and engine.status()["round"] == 0


# --- crash safety ------------------------------------------------------------------------------------


def test_hard_state_is_persisted_before_every_message_that_depends_on_it() -> None:
    net = Net(4)
    net.drop = lambda src, dst, msg: msg.kind == Kind.COMMIT and msg.height == 2  # forces round changes
    net.txs_to_all()
    net.txs_to_all()
    net.tick(40)
    net.drop = lambda src, dst, msg: False
    net.tick(40)
    assert min(net.heights()) >= 2
    assert any(m.kind == Kind.ROUND_CHANGE for _, m in net.sent)
    replay: list[dict[str, bytes]] = [{} for _ in range(4)]
    checked = 0
    for i, actions in net.log:
        for action in actions:
            if isinstance(action, Persist):
                replay[i].update(action.puts)
                for key in action.deletes:
                    replay[i].pop(key, None)
            elif isinstance(action, Broadcast):
                msg = decode(action.data)
                state = decode_state(replay[i][STATE_KEY])
                assert state.height == msg.height
                assert state.round >= msg.round
                if state.round == msg.round:
                    recorded = {Kind.PROPOSAL: state.proposal, Kind.PREPARE: state.prepare,
                                Kind.COMMIT: state.commit}.get(msg.kind)
                    assert recorded == msg.digest or (msg.kind == Kind.ROUND_CHANGE and state.round_change)
                if msg.kind == Kind.COMMIT:
                    assert state.prepared_round >= msg.round
                checked += 1
    assert checked > 20


def test_a_restarted_validator_never_prepares_a_second_block_in_the_same_round() -> None:
    net = Net(4)
    replica = 0
    block_a, block_b = child(GENESIS, net.ids[1], salt=1), child(GENESIS, net.ids[1], salt=2)
    (prepare,) = broadcasts(net.step(replica, Received(net.ids[1], net.proposal(block_a))))
    assert prepare.digest == block_a.hash
    net.engines[replica] = net.make(replica)  # crash and restart from the disk
    assert net.engines[replica].status()["round"] == 0
    assert broadcasts(net.step(replica, Received(net.ids[1], net.proposal(block_b)))) == []
    assert net.engines[replica].counters["refused_to_equivocate"] == 1


def test_a_restart_resumes_the_round_and_the_prepared_block() -> None:
    net = Net(4)
    net.drop = lambda src, dst, msg: msg.kind == Kind.COMMIT
    net.txs_to_all()
    assert net.heights() == [0, 0, 0, 0]
    net.tick(10)  # round 0 times out
    before = [(e.status()["round"], e.status()["prepared_round"]) for e in net.engines]
    assert min(r for r, _ in before) >= 1 and all(p is not None for _, p in before)
    net.engines = [net.make(i) for i in range(4)]  # every validator crashes and restarts
    assert [(e.status()["round"], e.status()["prepared_round"]) for e in net.engines] == before
    net.drop = lambda src, dst, msg: False
    net.tick(200)
    assert min(net.heights()) >= 1
    assert len({c[0][0].hash for c in net.chains}) == 1


# --- round changes -----------------------------------------------------------------------------------


def test_qbft_a_round_change_re_proposes_the_highest_prepared_block_with_its_certificate() -> None:
    """QBFT: a round change justifies a re-proposal with a prepared certificate."""
    net = Net(4)
    # Round 0: only validator 3 sees the prepare quorum; no COMMIT gets through.
    net.drop = lambda src, dst, msg: (msg.kind == Kind.PREPARE and dst != 3) or msg.kind == Kind.COMMIT
    net.txs_to_all()
    proposed = next(m.digest for _, m in net.sent if m.kind == Kind.PROPOSAL)
    assert net.engines[3].status()["prepared_round"] == 0
    # The round-1 proposer hears from validator 3, so its quorum includes the prepared block.
    assert proposer_index(1, 1, 4) == 2
    net.drop = lambda src, dst, msg: (msg.round == 0 and msg.kind in (Kind.PREPARE, Kind.COMMIT)) or (
        msg.kind == Kind.ROUND_CHANGE and src == 0 and dst == 2)
    net.tick(60)
    reproposal = next(m for i, m in net.sent if m.kind == Kind.PROPOSAL and m.round >= 1)
    assert reproposal.digest == proposed
    assert reproposal.votes, "carries the prepared certificate"
    assert len(reproposal.claims) >= 3
    assert min(net.heights()) == 1
    assert {c[0][0].hash for c in net.chains} == {proposed}


def test_qbft_a_fresh_proposal_that_ignores_a_prepared_block_is_rejected() -> None:
    net = Net(4)
    net.drop = lambda src, dst, msg: (msg.kind == Kind.PREPARE and dst != 3) or msg.kind == Kind.COMMIT
    net.txs_to_all()
    net.drop = lambda src, dst, msg: True  # keep the replicas to ourselves from here
    net.tick(5)  # everybody times out into round 1
    changes = [m for _, m in net.sent if m.kind == Kind.ROUND_CHANGE and m.round == 1]
    assert any(m.prepared_round == 0 for m in changes)
    proposer = proposer_index(1, 1, 4)
    fresh = child(GENESIS, net.ids[proposer], salt=5)
    claims = tuple(m.claim() for m in changes)
    forged = net.signed_as(proposer, Kind.PROPOSAL, 1, 1, fresh.hash, block_bytes=fresh.encode(),
                           claims=claims)
    replica = next(i for i in range(4) if i not in (proposer, 3))
    assert broadcasts(net.step(replica, Received(net.ids[proposer], forged))) == []
    assert net.engines[replica].counters["dropped_justification_ignores_prepared"] == 1
    too_few = net.signed_as(proposer, Kind.PROPOSAL, 1, 1, fresh.hash, block_bytes=fresh.encode(),
                            claims=tuple(m.claim() for m in changes if m.prepared_round < 0)[:2])
    assert broadcasts(net.step(3, Received(net.ids[proposer], too_few))) == []
    assert net.engines[3].counters["dropped_justification_below_quorum"] == 1


def test_f_plus_one_round_changes_move_a_replica_but_one_inflated_round_does_not() -> None:
    net = Net(4)
    engine = net.engines[0]
    net.step(0, TxsAvailable())
    inflated = net.signed_as(3, Kind.ROUND_CHANGE, 1, 1_000_000, ZERO_DIGEST)
    assert engine.step(Received(net.ids[3], inflated)) == []
    assert engine.status()["round"] == 0
    actions = engine.step(Received(net.ids[2], net.signed_as(2, Kind.ROUND_CHANGE, 1, 5, ZERO_DIGEST)))
    assert engine.status()["round"] == 5, "the lowest round among the f + 1 highest"
    (change,) = broadcasts(actions)
    assert (change.kind, change.round) == (Kind.ROUND_CHANGE, 5)
    assert isinstance(actions[0], Persist)


def test_a_validator_alone_in_a_round_waits_there_and_repeats_its_round_change() -> None:
    net = Net(4)
    net.drop = lambda src, dst, msg: True
    net.step(0, TxsAvailable())
    net.tick(4)
    assert net.engines[0].status()["round"] == 1
    net.tick(50)
    assert net.engines[0].status()["round"] == 1, "round 1 never started: no reason to leave it"
    mine = [m for i, m in net.sent if i == 0 and m.kind == Kind.ROUND_CHANGE]
    assert len(mine) > 3 and len({(m.round, m.signature) for m in mine}) == 1


def test_an_idle_chain_stays_quiet_and_a_replica_with_transactions_ends_a_dead_proposers_round() -> None:
    net = Net(4)
    net.tick(500)
    assert net.sent == [] and net.heights() == [0, 0, 0, 0]
    proposer = proposer_index(1, 0, 4)
    net.drop = lambda src, dst, msg: src == proposer or dst == proposer
    other = (proposer + 1) % 4
    net.step(other, TxsAvailable())  # only one replica has transactions; the proposer has none
    net.tick(100)
    live = [h for i, h in enumerate(net.heights()) if i != proposer]
    assert min(live) >= 1
    assert net.chains[other][0][1]["round"] >= 1


# --- heights -----------------------------------------------------------------------------------------


def test_future_height_messages_are_buffered_within_a_bound_and_replayed() -> None:
    net = Net(4)
    engine = net.engines[0]
    block1 = child(GENESIS, net.ids[1])
    block2 = child(tip_of(block1), net.ids[proposer_index(2, 0, 4)])
    assert engine.step(Received(net.ids[2], net.proposal(block2))) == []
    assert engine.counters["buffered"] == 1
    per_author = CONFIG.max_buffered_messages // 4
    for r in range(per_author + 1):
        engine.step(Received(net.ids[3], net.signed_as(3, Kind.PREPARE, 2, r, block2.hash)))
    assert engine.counters["dropped_buffer_full"] == 1
    (prepare, *_) = broadcasts(engine.step(ChainAdvanced(tip_of(block1))))
    assert (prepare.kind, prepare.height, prepare.digest) == (Kind.PREPARE, 2, block2.hash)


def test_a_commit_holds_the_next_heights_buffered_proposal_back_until_the_next_step() -> None:
    """The checker executes on the runtime's committed head, which holds the decided block only once
    the runtime has executed the Commit: asked in the same step, it refused the next height's block
    and the engine kept that verdict for the whole height (a node that never prepares it)."""
    net = Net(4)
    first, second = proposer_index(1, 0, 4), proposer_index(2, 0, 4)
    me = next(i for i in range(4) if i not in (first, second))
    others = [a for a in range(4) if a != me]
    engine, checker = net.engines[me], net.checkers[me]
    block1 = child(GENESIS, net.ids[first])
    block2 = child(tip_of(block1), net.ids[second])
    assert engine.step(Received(net.ids[second], net.proposal(block2))) == []  # buffered
    engine.step(Received(net.ids[first], net.proposal(block1)))
    for a in others:
        engine.step(Received(net.ids[a], net.signed_as(a, Kind.PREPARE, 1, 0, block1.hash)))
    decided: list[Action] = []
    for a in others:
        decided = engine.step(Received(net.ids[a], net.signed_as(a, Kind.COMMIT, 1, 0, block1.hash)))
        if any(isinstance(action, Commit) for action in decided):
            break
    assert any(isinstance(action, Commit) and action.block.hash == block1.hash for action in decided)
    assert block2.hash not in checker.calls
    assert not [m for m in broadcasts(decided) if m.height == 2]
    prepares = [(m.kind, m.height, m.digest) for m in broadcasts(engine.step(Tick()))]
    assert (Kind.PREPARE, 2, block2.hash) in prepares
    assert checker.calls.count(block2.hash) == 1


def test_messages_a_commit_held_back_are_not_checked_once_block_sync_has_passed_their_height() -> None:
    net = Net(4)
    first, second = proposer_index(1, 0, 4), proposer_index(2, 0, 4)
    me = next(i for i in range(4) if i not in (first, second))
    others = [a for a in range(4) if a != me]
    engine, checker = net.engines[me], net.checkers[me]
    block1 = child(GENESIS, net.ids[first])
    block2 = child(tip_of(block1), net.ids[second])
    engine.step(Received(net.ids[second], net.proposal(block2)))
    engine.step(Received(net.ids[first], net.proposal(block1)))
    for a in others:
        engine.step(Received(net.ids[a], net.signed_as(a, Kind.PREPARE, 1, 0, block1.hash)))
    for a in others:
        if any(isinstance(action, Commit) for action in
               engine.step(Received(net.ids[a], net.signed_as(a, Kind.COMMIT, 1, 0, block1.hash)))):
            break
    assert engine.counters["blocks_committed"] == 1 and block2.hash not in checker.calls
    # The runtime stored block 1, then block 2 from block sync: block 2's proposal is history now.
    engine.step(ChainAdvanced(tip_of(block2)))
    assert block2.hash not in checker.calls
    assert engine.status()["height"] == 3


def test_an_event_after_a_commit_of_held_back_messages_waits_for_the_next_step() -> None:
    """The held-back messages of height 2 decide it at the start of the next step: the event of that
    step (height 3's proposal) must wait too, for the runtime to store block 2."""
    net = Net(4)
    first, second, third = (proposer_index(h, 0, 4) for h in (1, 2, 3))
    me = next(i for i in range(4) if i not in (first, second, third))
    others = [a for a in range(4) if a != me]
    engine, checker = net.engines[me], net.checkers[me]
    block1 = child(GENESIS, net.ids[first])
    block2 = child(tip_of(block1), net.ids[second])
    block3 = child(tip_of(block2), net.ids[third])
    engine.step(Received(net.ids[second], net.proposal(block2)))
    for a in others:
        engine.step(Received(net.ids[a], net.signed_as(a, Kind.COMMIT, 2, 0, block2.hash)))
    engine.step(Received(net.ids[first], net.proposal(block1)))
    for a in others:
        engine.step(Received(net.ids[a], net.signed_as(a, Kind.PREPARE, 1, 0, block1.hash)))
    for a in others:
        if any(isinstance(action, Commit) for action in
               engine.step(Received(net.ids[a], net.signed_as(a, Kind.COMMIT, 1, 0, block1.hash)))):
            break
    assert engine.counters["blocks_committed"] == 1
    actions = engine.step(Received(net.ids[third], net.proposal(block3)))
    assert [a.block.hash for a in actions if isinstance(a, Commit)] == [block2.hash]
    assert block3.hash not in checker.calls
    prepares = [(m.kind, m.height, m.digest) for m in broadcasts(engine.step(Tick()))]
    assert (Kind.PREPARE, 3, block3.hash) in prepares
class ByteBoundNet(Net):
    """Production-sized message-count caps, small blocks and byte caps, so that a flood stays cheap."""

    config = dataclasses.replace(CONFIG, max_future_heights=10, max_buffered_messages=4096,
                                 max_block_bytes=64 * 1024, max_buffered_bytes=4 * 1024 * 1024,
                                 max_buffered_bytes_per_author=1024 * 1024)

    def make(self, i: int) -> BftEngine:
        ctx = EngineContext(CHAIN, self.ids, HmacSigner(self.ids[i]), self.verifier, self.checkers[i], GENESIS,
                            random.Random(i), {}, self.config)
        return BftEngine(ctx)


def junk_proposal(net: Net, author: int, height: int, round: int, size: int, seed: int) -> bytes:
    """A validly signed proposal whose block is never looked at before its height: only bytes."""
    block_bytes = random.Random(seed).randbytes(size)
    claims = (Claim(author, -1, ZERO_DIGEST, b"c" * 32),) if round else ()
    return net.signed_as(author, Kind.PROPOSAL, height, round, hashlib.sha256(block_bytes).hexdigest(),
                         block_bytes=block_bytes, claims=claims)


def test_a_byzantine_validator_cannot_fill_the_future_height_buffer_beyond_its_byte_share() -> None:
    """One validator signs 300 proposals for h + 10, each with a nearly maximal block: what the replica
    holds stays within that author's byte share, the others' messages are still buffered and used, and
    everything is freed once the chain passes those heights."""
    net = ByteBoundNet(4)
    engine = net.engines[0]
    cfg = ByteBoundNet.config
    block1 = child(GENESIS, net.ids[1])
    block2 = child(tip_of(block1), net.ids[proposer_index(2, 0, 4)])
    honest = proposer_index(2, 0, 4)
    byzantine = next(i for i in (1, 2, 3) if i != honest)
    witness = next(i for i in (1, 2, 3) if i not in (honest, byzantine))
    far = 1 + cfg.max_future_heights
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for r in range(300):
            data = junk_proposal(net, byzantine, far, r, cfg.max_block_bytes - 1024, seed=r)
            assert engine.step(Received(net.ids[byzantine], data)) == []
        held = tracemalloc.get_traced_memory()[0] - before
        # Without a byte bound this is 300 blocks, about 19 MB.
        assert held < 2 * cfg.max_buffered_bytes_per_author, held
        assert engine.step(Received(net.ids[honest], net.proposal(block2))) == []
        assert engine.step(Received(net.ids[witness], net.signed_as(witness, Kind.PREPARE, 2, 0, block2.hash))) == []
        assert engine.buffered_bytes <= cfg.max_buffered_bytes_per_author + 4096  # + the two honest ones
        assert engine.counters["dropped_buffer_author_bytes_full"] > 250
        assert engine.counters["buffered"] < 50
        # The honest proposal for the next height was kept and is acted on once that height starts.
        prepares = [m for m in broadcasts(engine.step(ChainAdvanced(tip_of(block1)))) if m.kind == Kind.PREPARE]
        assert [(m.height, m.digest) for m in prepares] == [(2, block2.hash)]
        # Passing the flooded height frees what was held for it.
        engine.step(ChainAdvanced(ChainTip(far, "ab" * 32, 10_000, "cd" * 32)))
        assert engine.buffered_bytes == 0
        assert tracemalloc.get_traced_memory()[0] - before < 4 * cfg.max_block_bytes  # the test's last frame, ...
    finally:
        tracemalloc.stop()


def test_a_second_different_future_proposal_for_the_same_slot_is_equivocation_and_dropped() -> None:
    net = ByteBoundNet(4)
    engine = net.engines[0]
    first, second = (junk_proposal(net, 3, 3, 1, 1000, seed=s) for s in (1, 2))
    assert engine.step(Received(net.ids[3], first)) == []
    assert engine.step(Received(net.ids[3], second)) == []
    assert engine.step(Received(net.ids[3], first)) == []
    assert engine.counters["buffered"] == 1
    assert engine.counters["dropped_equivocation"] == 1 and engine.counters["equivocations_seen"] == 1
    assert engine.counters["dropped_duplicate"] == 1
    # Another round is another slot.
    assert engine.step(Received(net.ids[3], junk_proposal(net, 3, 3, 2, 1000, seed=3))) == []
    assert engine.counters["buffered"] == 2


def test_each_validator_may_hold_at_most_its_share_of_the_total_buffer() -> None:
    """f faulty validators flooding together cannot take the buffer space the others need."""
    net = ByteBoundNet(4)
    cfg = dataclasses.replace(ByteBoundNet.config, max_buffered_bytes=1024 * 1024)
    engine = BftEngine(EngineContext(CHAIN, net.ids, HmacSigner(net.ids[0]), net.verifier, Checker(), GENESIS,
                                     random.Random(0), {}, cfg))
    share = cfg.max_buffered_bytes // 4
    for author in (2, 3):
        for r in range(40):
            engine.step(Received(net.ids[author], junk_proposal(net, author, 5, r, 30_000, seed=r)))
    assert share - 32_000 < engine.buffered_bytes / 2 <= share
    assert engine.counters["dropped_buffer_author_bytes_full"] > 40


def test_a_validator_that_committed_hands_a_laggard_the_block_and_its_seals() -> None:
    net = Net(4)
    net.drop = lambda src, dst, msg: dst == 3 and msg.kind == Kind.COMMIT
    net.txs_to_all()
    assert net.heights() == [1, 1, 1, 0]
    net.drop = lambda src, dst, msg: False
    net.tick(10)  # the laggard times out; its ROUND-CHANGE is stale to the others, who answer
    assert net.heights()[3] == 1
    assert net.chains[3][0][0].hash == net.chains[0][0][0].hash
    assert verify_certificate(net.chains[3][0][0], net.chains[3][0][1], net.ids, net.verifier)
    assert sum(e.counters.get("decided_replies", 0) for e in net.engines) >= 1


def test_a_damaged_or_impossible_hard_state_stops_the_engine_from_starting() -> None:
    """Our own records are trusted input: if they are broken, that is a broken invariant, and it raises."""
    net = Net(4)
    net.txs_to_all()
    net.drop = lambda src, dst, msg: msg.kind == Kind.COMMIT
    net.txs_to_all()  # height 2 gets prepared but not committed
    assert net.heights() == [1, 1, 1, 1] and STATE_KEY in net.disks[0]
    good = dict(net.disks[0])
    for damage, match in [
        ({STATE_KEY: b"{not json"}, "corrupt"),
        ({STATE_KEY: good[STATE_KEY].replace(b'"v":1', b'"v":2')}, "corrupt"),
        ({"bft/prepared_block": b"{}"}, "corrupt"),
    ]:
        net.disks[0] = {**good, **damage}
        with pytest.raises(ValueError, match=match):
            net.make(0)
    net.disks[0] = good
    net.chains[0] = []  # the block store lost height 1, but the hard state is for height 2
    with pytest.raises(ValueError, match="lost committed blocks"):
        net.make(0)


def test_the_factory_builds_the_engine_genesis_names_and_refuses_others() -> None:
    net = Net(1)
    ctx = EngineContext(CHAIN, net.ids, HmacSigner(net.ids[0]), net.verifier, Checker(), GENESIS,
                        random.Random(0), {}, CONFIG)
    assert isinstance(factory.make_engine("pbft", ctx), BftEngine)
    with pytest.raises(ValueError, match="unknown consensus engine"):
        factory.make_engine("proof-of-work", ctx)
