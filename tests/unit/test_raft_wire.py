"""Raft's bytes: message encoding, the commit certificate, and restoring durable records."""

from __future__ import annotations

import random

import pytest

from consensus.api import ChainTip, Ed25519Signer, Ed25519Verifier, EngineContext
from consensus.raft import RaftEngine, RaftStateError, verify_certificate
from consensus.raft.certificate import make_certificate, sign_commit
from consensus.raft.log import (
    BASE_KEY,
    STATE_KEY,
    Base,
    Entry,
    HardState,
    encode_base,
    encode_entry,
    encode_hard_state,
    entry_key,
    restore,
)
from consensus.raft.messages import (
    AppendEntries,
    AppendResponse,
    CommitSignature,
    MalformedMessage,
    RequestVote,
    SyncHint,
    VoteResponse,
    WrongChain,
    decode_message,
    encode_append_entries,
    encode_append_response,
    encode_request_vote,
    encode_sync_hint,
    encode_vote_response,
)
from ledger import keys
from ledger.block import Block, make_block
from ledger.tx import DecodeMemo, Record, decode_canonical_tx, sign_tx

CHAIN = "raft-wire"
LEADER = keys.PrivateKey.from_seed(b"L" * 32)
OTHER = keys.PrivateKey.from_seed(b"O" * 32)
VALIDATORS = [LEADER.address, OTHER.address]
GENESIS = ChainTip(0, "ab" * 32, 1_700_000_000_000, "cd" * 32)


def chain(n: int, parent: ChainTip = GENESIS) -> list[Block]:
    blocks: list[Block] = []
    prev_hash, ts = parent.block_hash, parent.timestamp
    for h in range(parent.height + 1, parent.height + n + 1):
        blocks.append(make_block(CHAIN, h, prev_hash, ts + h, LEADER.address, (), "ee" * 32))
        prev_hash = blocks[-1].hash
    return blocks


def decode(data: bytes) -> object:
    return decode_message(data, CHAIN, max_items=8, max_block_bytes=1 << 20)


# --- messages --------------------------------------------------------------------------------------


def test_every_message_kind_round_trips() -> None:
    blocks = chain(2)
    sig = CommitSignature(1, 3, LEADER.address, b"\x07" * 64)
    short = CommitSignature(2, 3, OTHER.address, b"\x01" * 32)
    ae = decode(encode_append_entries(CHAIN, LEADER.address, 3, 0, None, GENESIS.block_hash, 1,
                                      [(2, blocks[0].encode()), (3, blocks[1].encode())], [sig, short]))
    assert isinstance(ae, AppendEntries)
    assert (ae.sender, ae.term, ae.prev_index, ae.prev_term, ae.commit) == (LEADER.address, 3, 0, None, 1)
    assert ae.prev_hash == GENESIS.block_hash
    assert [(e.term, e.block) for e in ae.entries] == [(2, blocks[0]), (3, blocks[1])]
    assert ae.certs == (sig, short)
    me = OTHER.address
    for msg, encode in [
        (RequestVote(me, 5, 10, 4, 9), encode_request_vote),
        (RequestVote(me, 5, 10, None, 9), encode_request_vote),
        (VoteResponse(me, 5, LEADER.address, True), encode_vote_response),
        (RequestVote(me, 6, 10, 4, 9, pre=True), encode_request_vote),
        (VoteResponse(me, 6, LEADER.address, False, pre=True), encode_vote_response),
        (AppendResponse(me, 5, False, 7, 3, 2), encode_append_response),
        (SyncHint(me, 5, 12, "12" * 32), encode_sync_hint),
    ]:
        assert decode(encode(CHAIN, msg)) == msg  # type: ignore[operator]


def test_a_block_travels_as_its_own_cached_bytes() -> None:
    block = chain(1)[0]
    data = encode_append_entries(CHAIN, LEADER.address, 1, 0, 0, GENESIS.block_hash, 0,
                                 [(1, block.encode())], [])
    assert block.encode() in data


def test_entries_reuse_the_transactions_the_node_already_decoded() -> None:
    """A follower met most of a block's transactions in gossip: with the node's memo, the entry's
    transactions are those objects, not a second decode of the same bytes."""
    tx = sign_tx(OTHER, CHAIN, 0, Record("k", "v"))
    block = make_block(CHAIN, 1, GENESIS.block_hash, GENESIS.timestamp + 1, LEADER.address, (tx,), "ee" * 32)
    data = encode_append_entries(CHAIN, LEADER.address, 1, 0, 0, GENESIS.block_hash, 0,
                                 [(1, block.encode())], [])
    memo = DecodeMemo()
    gossiped = decode_canonical_tx(tx.encode(), memo)
    with_memo = decode_message(data, CHAIN, max_items=8, max_block_bytes=1 << 20, memo=memo)
    assert isinstance(with_memo, AppendEntries) and with_memo.entries[0].block.txs[0] is gossiped
    without = decode(data)
    assert isinstance(without, AppendEntries) and without.entries[0].block.txs[0] is not gossiped


@pytest.mark.parametrize("mutate", [
    lambda d: d[:-1],  # truncated
    lambda d: d + b"\x00",  # trailing byte
    lambda d: b"XAFT" + d[4:],  # not Raft
    lambda d: d[:4] + b"\x02" + d[5:],  # unknown version
    lambda d: d[:5] + b"\x09" + d[6:],  # unknown kind
    lambda d: b"",
])
def test_malformed_bytes_are_refused(mutate: object) -> None:
    data = encode_vote_response(CHAIN, VoteResponse(OTHER.address, 1, LEADER.address, True))
    with pytest.raises(MalformedMessage):
        decode(mutate(data))  # type: ignore[operator]


def test_bad_fields_are_refused() -> None:
    def vote(term: int, chain_id: str = CHAIN) -> bytes:
        return encode_vote_response(chain_id, VoteResponse(OTHER.address, term, LEADER.address, True))

    with pytest.raises(MalformedMessage, match="boolean"):
        decode(vote(1)[:-1] + b"\x02")
    with pytest.raises(MalformedMessage, match="term"):
        decode(vote(2**63))
    with pytest.raises(WrongChain):
        decode(vote(1, "another-chain"))
    assert isinstance(decode_message(vote(1, "another-chain"), None, 8, 100), VoteResponse)  # inspection
    empty_sig = encode_append_entries(CHAIN, LEADER.address, 1, 0, 0, GENESIS.block_hash, 0, [],
                                      [CommitSignature(1, 1, LEADER.address, b"\x01")])
    with pytest.raises(MalformedMessage, match="empty commit signature"):
        decode(empty_sig[:-2] + b"\x00")  # the signature's length byte and its one byte -> length 0


def test_append_entries_limits_and_bad_blocks_are_refused() -> None:
    blocks = chain(9)
    def append(entries: list[tuple[int, bytes]]) -> bytes:
        return encode_append_entries(CHAIN, LEADER.address, 1, 0, 0, GENESIS.block_hash, 0, entries, [])

    many = append([(1, b.encode()) for b in blocks])
    with pytest.raises(MalformedMessage, match="more than 8 entries"):
        decode(many)
    big = append([(1, blocks[0].encode())])
    with pytest.raises(MalformedMessage, match="larger than"):
        decode_message(big, CHAIN, max_items=8, max_block_bytes=10)
    garbage = append([(1, b'{"header": 1}')])
    with pytest.raises(MalformedMessage, match="bad block"):
        decode(garbage)


# --- certificate -----------------------------------------------------------------------------------


def test_certificate_verifies_only_for_its_block_term_and_a_validator() -> None:
    block, other = chain(2)
    sig = sign_commit(Ed25519Signer(LEADER), CHAIN, 1, block.hash, 4)
    good = make_certificate(4, LEADER.address, sig)
    v = Ed25519Verifier()
    assert verify_certificate(block, good, VALIDATORS, v)
    assert not verify_certificate(other, good, VALIDATORS, v)
    assert not verify_certificate(block, {**good, "term": 5}, VALIDATORS, v)
    assert not verify_certificate(block, {**good, "leader": OTHER.address}, VALIDATORS, v)
    assert not verify_certificate(block, good, [OTHER.address], v)  # not a validator
    assert not verify_certificate(block, {**good, "engine": "pbft"}, VALIDATORS, v)
    assert not verify_certificate(block, {**good, "extra": 1}, VALIDATORS, v)
    assert not verify_certificate(block, {**good, "signature": good["signature"].upper()}, VALIDATORS, v)
    junk: object
    for junk in (None, [], "x", {"engine": "raft"}, {**good, "term": "4"}, {**good, "term": True},
                 {**good, "signature": "zz" * 64}, {**good, "leader": 7}):
        assert not verify_certificate(block, junk, VALIDATORS, v)


# --- restore -----------------------------------------------------------------------------------------


def records(entries: list[Entry], base: Base, state: HardState | None = None) -> dict[str, bytes]:
    out = {entry_key(e.index): encode_entry(e) for e in entries}
    out[BASE_KEY] = encode_base(base)
    out[STATE_KEY] = encode_hard_state(state or HardState(5, None))
    return out


def tip_of(block: Block) -> ChainTip:
    return ChainTip(block.height, block.hash, block.header.timestamp, block.header.app_hash)


def test_restore_keeps_entries_above_the_tip_and_the_committed_ones_that_match() -> None:
    blocks = chain(4)
    base = Base(0, 0, GENESIS.block_hash)
    recs = records([Entry(1, b) for b in blocks], base, HardState(3, LEADER.address))
    r = restore(recs, tip_of(blocks[1]), VALIDATORS)
    assert r.hard_state == HardState(3, LEADER.address)
    assert (r.log.base.index, r.log.last_index, r.stale_keys) == (0, 4, [])


def test_restore_after_block_sync_overtook_the_log_starts_over_from_the_tip() -> None:
    blocks = chain(3)
    synced = make_block(CHAIN, 3, blocks[1].hash, 99, OTHER.address, (), "ff" * 32)
    recs = records([Entry(1, b) for b in blocks], Base(0, 0, GENESIS.block_hash))
    r = restore(recs, tip_of(synced), VALIDATORS)
    assert (r.log.base, r.log.last_index) == (Base(3, None, synced.hash), 3)
    assert r.stale_keys == [entry_key(1), entry_key(2), entry_key(3)] and r.base_dirty


def test_restore_of_a_fresh_node_is_empty() -> None:
    r = restore({}, GENESIS, VALIDATORS)
    assert r.hard_state == HardState(0, None) and r.log.base == Base(0, 0, GENESIS.block_hash)


@pytest.mark.parametrize("breakage, match", [
    ("gap", "does not extend the entry before"),
    ("base_above_tip", "block store ends"),
    ("term_above_current", "above the current term"),
    ("foreign_record", "unexpected engine records"),
    ("bad_state", "malformed"),
    ("no_base", "without the raft/base"),
    ("base_conflict", "disagree"),
])
def test_restore_refuses_inconsistent_records(breakage: str, match: str) -> None:
    blocks = chain(3)
    recs = records([Entry(1, b) for b in blocks], Base(0, 0, GENESIS.block_hash))
    tip = tip_of(blocks[0])
    if breakage == "gap":
        del recs[entry_key(2)]
    elif breakage == "base_above_tip":
        recs = records([Entry(1, blocks[2])], Base(2, 1, blocks[1].hash))
    elif breakage == "term_above_current":
        recs[STATE_KEY] = encode_hard_state(HardState(0, None))
    elif breakage == "foreign_record":
        recs["pbft/round"] = b"1"
    elif breakage == "bad_state":
        recs[STATE_KEY] = b'{"term": -1, "vote": null}'
    elif breakage == "no_base":
        del recs[BASE_KEY]
    elif breakage == "base_conflict":
        recs = records([], Base(1, 1, "99" * 32))
    with pytest.raises(RaftStateError, match=match):
        restore(recs, tip, VALIDATORS)


def test_an_engine_refuses_to_run_for_a_node_that_is_not_a_validator() -> None:
    ctx = EngineContext(CHAIN, [OTHER.address], Ed25519Signer(LEADER), Ed25519Verifier(), None,  # type: ignore[arg-type]
                        GENESIS, random.Random(0), {})
    with pytest.raises(ValueError, match="not a validator"):
        RaftEngine(ctx)


def test_the_factory_builds_raft_and_checks_its_certificates() -> None:
    from consensus import factory

    ctx = EngineContext(CHAIN, VALIDATORS, Ed25519Signer(LEADER), Ed25519Verifier(), None,  # type: ignore[arg-type]
                        GENESIS, random.Random(0), {})
    assert isinstance(factory.make_engine("raft", ctx), RaftEngine)
    block = chain(1)[0]
    good = make_certificate(2, LEADER.address, sign_commit(Ed25519Signer(LEADER), CHAIN, 1, block.hash, 2))
    assert factory.verify_certificate("raft", block, good, VALIDATORS, Ed25519Verifier())
    assert not factory.verify_certificate("pbft", block, good, VALIDATORS, Ed25519Verifier())
