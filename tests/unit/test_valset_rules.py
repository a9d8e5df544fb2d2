"""Validator-set changes as ledger rules: the committee decides add, remove and rotate; each takes
effect ACTIVATION_DELAY blocks after the block that executes it; one change in flight; guards at
submission and again at execution (duplicate, unknown, last validator, bad key proof, a one-step
key rotation under raft)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import governance, keys, valset
from ledger.errors import Rejected
from ledger.genesis import Genesis, Validator
from ledger.governance import GenesisGovernance, decode_action
from tests.unit.test_governance import CHAIN, Chain, M

VAL = [keys.PrivateKey.from_seed(bytes([0x70 + i]) * 32) for i in range(6)]  # VAL[4:] start outside
URL = "ws://127.0.0.1:9105"


def val_genesis(n: int = 4, consensus: str = "pbft") -> Genesis:
    g = GenesisGovernance(tuple((m.address, 1) for m in M[:3]), 2, 3, 5)
    return Genesis(CHAIN, 0, consensus, tuple(Validator(v.address, f"v{i}") for i, v in enumerate(VAL[:n])),
                   tuple((m.address, 1000) for m in M), g)


def ids_at(chain: Chain, height: int) -> tuple[str, ...] | None:
    return valset.ids_at(valset.record(chain.overlay()), height)


def rotation_proof(new: keys.PrivateKey, old: str, chain_id: str = CHAIN) -> str:
    return new.sign(valset.rotation_message(chain_id, old, new.address)).hex()


def refusal(chain: Chain, action: str, **args: Any) -> str:
    _, receipt = chain.propose(M[0], action, **args)
    assert receipt.code == "invalid_proposal", receipt
    return receipt.message


def test_the_genesis_set_is_in_state_only_where_a_committee_can_change_it() -> None:
    chain = Chain(val_genesis())
    assert ids_at(chain, 1) == tuple(v.address for v in VAL[:4])
    bare = Genesis(CHAIN, 0, "pbft", (Validator(VAL[0].address, "v0"),), ((M[0].address, 1),))
    assert valset.VALSET_KEY not in bare.initial_writes()


def test_an_added_validator_is_in_force_from_the_activation_height_on_not_before() -> None:
    """The rule both engines follow: decided in block h, in force from h + ACTIVATION_DELAY."""
    chain = Chain(val_genesis())
    pid = chain.decide("add-validator", node_id=VAL[4].address, p2p_url=URL, name="newbank")
    executed = chain.height
    view = chain.proposal(pid)
    assert view["executed_height"] == executed
    assert view["effective_height"] == executed + valset.ACTIVATION_DELAY
    old, new = tuple(v.address for v in VAL[:4]), tuple(v.address for v in VAL[:5])
    for h in range(executed + 1, executed + valset.ACTIVATION_DELAY):
        assert ids_at(chain, h) == old
    assert ids_at(chain, executed + valset.ACTIVATION_DELAY) == new
    while chain.height < executed + valset.ACTIVATION_DELAY + 1:
        chain.block()
    record = valset.record(chain.overlay())
    assert record is not None and record["pending"] is None
    assert record["validators"][-1] == {"node_id": VAL[4].address, "name": "newbank", "p2p_url": URL}
    assert ids_at(chain, chain.height + 1) == new


def test_only_one_change_is_in_flight() -> None:
    chain = Chain(val_genesis())
    pid, receipt = chain.propose(M[0], "remove-validator", node_id=VAL[3].address)
    assert receipt.ok
    assert "is open; one validator-set change at a time" in refusal(chain, "add-validator", node_id=VAL[4].address,
                                                                    p2p_url=URL)
    assert chain.vote(M[1], pid).ok
    assert "still waiting for its activation height" in refusal(chain, "add-validator", node_id=VAL[4].address,
                                                                p2p_url=URL)
    while chain.height < chain.proposal(pid)["effective_height"]:
        chain.block()
    chain.decide("add-validator", node_id=VAL[4].address, p2p_url=URL)


def test_the_guard_runs_again_at_execution_against_a_pending_change() -> None:
    """A proposal is checked again when it passes (the state may have changed since submission)."""
    chain = Chain(val_genesis())
    overlay = chain.overlay()
    valset.apply_change(overlay, "remove-validator", {"node_id": VAL[3].address}, "00" * 32, 99)
    for action, args in (("add-validator", {"node_id": VAL[4].address, "p2p_url": URL}),
                         ("remove-validator", {"node_id": VAL[2].address})):
        with pytest.raises(Rejected, match="one change at a time"):
            governance.ACTIONS[action].check(overlay, args)


@pytest.mark.parametrize(("action", "args", "why"), [
    ("add-validator", {"node_id": VAL[1].address, "p2p_url": URL}, "is already a validator"),
    ("remove-validator", {"node_id": VAL[5].address}, "is not a validator"),
    ("rotate-validator-key", {"node_id": VAL[5].address, "new_node_id": VAL[4].address,
                              "proof": rotation_proof(VAL[4], VAL[5].address)}, "is not a validator"),
    ("rotate-validator-key", {"node_id": VAL[0].address, "new_node_id": VAL[1].address,
                              "proof": rotation_proof(VAL[1], VAL[0].address)}, "already a validator"),
    ("rotate-validator-key", {"node_id": VAL[0].address, "new_node_id": VAL[4].address,
                              "proof": rotation_proof(VAL[5], VAL[0].address)}, "only the holder of the new key"),
    ("rotate-validator-key", {"node_id": VAL[0].address, "new_node_id": VAL[4].address,
                              "proof": rotation_proof(VAL[4], VAL[0].address, "another-chain")},
     "only the holder of the new key"),
])
def test_changes_that_cannot_apply_are_refused(action: str, args: dict[str, Any], why: str) -> None:
    chain = Chain(val_genesis())
    assert why in refusal(chain, action, **args)
    assert ids_at(chain, chain.height + 10) == tuple(v.address for v in VAL[:4])


@pytest.mark.parametrize(("action", "args"), [
    ("add-validator", {"node_id": "00" * 31, "p2p_url": URL}),
    ("add-validator", {"node_id": VAL[4].address, "p2p_url": "http://x:1"}),
    ("add-validator", {"node_id": VAL[4].address, "p2p_url": URL, "power": 0}),
    ("add-validator", {"node_id": VAL[4].address}),
    ("add-validator", {"node_id": VAL[4].address, "p2p_url": URL, "name": "x" * 65}),
    ("rotate-validator-key", {"node_id": VAL[0].address, "new_node_id": VAL[4].address, "proof": "ab"}),
])
def test_malformed_changes_are_refused_when_decoded(action: str, args: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as info:
        decode_action(action, args)
    assert info.value.code == "invalid_proposal"


def test_the_last_validator_cannot_be_removed() -> None:
    chain = Chain(val_genesis(n=1))
    assert "last validator" in refusal(chain, "remove-validator", node_id=VAL[0].address)


def test_a_rotated_key_takes_its_predecessors_place_in_the_order() -> None:
    chain = Chain(val_genesis())
    pid = chain.decide("rotate-validator-key", node_id=VAL[1].address, new_node_id=VAL[4].address,
                       proof=rotation_proof(VAL[4], VAL[1].address))
    at = chain.proposal(pid)["effective_height"]
    assert ids_at(chain, at) == (VAL[0].address, VAL[4].address, VAL[2].address, VAL[3].address)


def test_raft_takes_adds_and_removes_one_at_a_time() -> None:
    chain = Chain(val_genesis(n=3, consensus="raft"))
    chain.decide("add-validator", node_id=VAL[4].address, p2p_url=URL)
    while ids_at(chain, chain.height + 1) != tuple(v.address for v in (*VAL[:3], VAL[4])):
        chain.block()
    chain.block()
    chain.decide("remove-validator", node_id=VAL[0].address)
    at = chain.height + valset.ACTIVATION_DELAY
    assert ids_at(chain, at) == tuple(v.address for v in (*VAL[1:3], VAL[4]))


def test_raft_refuses_a_one_step_key_rotation_and_says_how_to_do_it_in_two() -> None:
    """{a, b, c} -> {a, b, d} in one step: the majorities {b, c} and {a, d} share no voter."""
    chain = Chain(val_genesis(n=3, consensus="raft"))
    message = refusal(chain, "rotate-validator-key", node_id=VAL[2].address, new_node_id=VAL[4].address,
                      proof=rotation_proof(VAL[4], VAL[2].address))
    assert "add the new key (add-validator)" in message and "remove the old one (remove-validator)" in message
    assert ids_at(chain, chain.height + valset.ACTIVATION_DELAY) == tuple(v.address for v in VAL[:3])


def test_preview_counts_a_majority_under_raft() -> None:
    chain = Chain(val_genesis(n=3, consensus="raft"))
    view = valset.preview(chain.overlay(), "add-validator", {"node_id": VAL[4].address, "p2p_url": URL})
    assert (view["n"], view["f"], view["quorum"]) == (4, 1, 3)
    view = valset.preview(chain.overlay(), "remove-validator", {"node_id": VAL[0].address})
    assert (view["n"], view["f"], view["quorum"]) == (2, 0, 2)
    assert valset.figures(1, "raft") == {"n": 1, "f": 0, "quorum": 1}
    assert valset.figures(5, "raft") == {"n": 5, "f": 2, "quorum": 3}


def test_preview_gives_the_new_n_f_and_quorum() -> None:
    chain = Chain(val_genesis())
    view = valset.preview(chain.overlay(), "add-validator", {"node_id": VAL[4].address, "p2p_url": URL})
    assert (view["n"], view["f"], view["quorum"]) == (5, 1, 4)
    view = valset.preview(chain.overlay(), "remove-validator", {"node_id": VAL[0].address})
    assert (view["n"], view["f"], view["quorum"]) == (3, 0, 2)


def test_replay_reaches_the_same_app_hash_through_changes() -> None:
    chain = Chain(val_genesis())
    chain.decide("add-validator", node_id=VAL[4].address, p2p_url=URL)
    for _ in range(3):
        chain.block()
    chain.decide("remove-validator", node_id=VAL[0].address)
    for _ in range(3):
        chain.block()
    replay = Chain(chain.genesis)
    for txs in chain.blocks:
        replay.block(*txs)
    assert replay.app_hash == chain.app_hash and replay.state == chain.state
    assert ids_at(replay, replay.height + 1) == tuple(v.address for v in VAL[1:5])
    changes = valset.history(replay.overlay())
    assert [c["validators"] for c in changes] == [[v.address for v in VAL[:5]], [v.address for v in VAL[1:5]]]
    assert all(c["effective_height"] == c["executed_height"] + valset.ACTIVATION_DELAY for c in changes)


def test_governance_overview_is_untouched_by_the_set_record() -> None:
    chain = Chain(val_genesis())
    assert governance.overview(chain.overlay(), 1)["enabled"] is True
