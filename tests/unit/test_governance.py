"""Governance rules: committee votes, actions, permissions and freezes, expiry, no self-lockout, and
replay from genesis; executed through `ledger.state.execute` on a dict standing in for the state."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import governance, keys
from ledger.errors import Rejected
from ledger.genesis import Genesis, Validator
from ledger.governance import GenesisGovernance, decode_action
from ledger.state import Receipt, StateOverlay, account_key, decode_account, execute
from ledger.tx import Issue, Propose, Record, Transaction, Transfer, Vote, sign_tx

CHAIN = "ledger-gov"
V = keys.PrivateKey.from_seed(b"v" * 32)
M = [keys.PrivateKey.from_seed(bytes([0x40 + i]) * 32) for i in range(4)]  # M[3] starts outside
ALICE = keys.PrivateKey.from_seed(b"a" * 32)
BOB = keys.PrivateKey.from_seed(b"b" * 32)
CAROL = keys.PrivateKey.from_seed(b"c" * 32)


def gov_genesis(lifetime: int = 5, **extra: Any) -> Genesis:
    g = GenesisGovernance(tuple((m.address, 1) for m in M[:3]), 2, 3, lifetime, **extra)
    return Genesis(CHAIN, 0, "pbft", (Validator(V.address, "v0"),),
                   tuple((a.address, 1000) for a in (ALICE, BOB, *M)), g)


class Chain:
    """A chain executed block by block on a dict; remembers its blocks for replay."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.state: dict[bytes, bytes] = dict(genesis.initial_writes())
        self.app_hash = genesis.initial_app_hash()
        self.height = 0
        self.blocks: list[list[Transaction]] = []
        self.nonces: dict[str, int] = {}

    def tx(self, key: keys.PrivateKey, payload: Any) -> Transaction:
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        return sign_tx(key, CHAIN, nonce, payload)

    def block(self, *txs: Transaction) -> list[Receipt]:
        self.height += 1
        result = execute(self.state, CHAIN, self.height, txs, self.app_hash)
        self.state.update(result.writes)
        self.app_hash = result.app_hash
        self.blocks.append(list(txs))
        return list(result.receipts)

    def run(self, key: keys.PrivateKey, payload: Any) -> Receipt:
        [receipt] = self.block(self.tx(key, payload))
        return receipt

    def propose(self, key: keys.PrivateKey, action: str, **args: Any) -> tuple[str, Receipt]:
        tx = self.tx(key, Propose(*decode_action(action, args)))
        [receipt] = self.block(tx)
        return tx.hash, receipt

    def vote(self, key: keys.PrivateKey, proposal: str, approve: bool = True) -> Receipt:
        return self.run(key, Vote(proposal, approve))

    def decide(self, action: str, **args: Any) -> str:
        """Propose with M0, approve with M1: passes 2 of 3."""
        pid, r = self.propose(M[0], action, **args)
        assert r.ok, r
        assert self.vote(M[1], pid).ok
        assert self.proposal(pid)["status"] == "executed", self.proposal(pid)
        return pid

    def overlay(self) -> StateOverlay:
        return StateOverlay(_Reader(self.state), CHAIN)

    def proposal(self, pid: str) -> dict[str, Any]:
        view = governance.proposal_view(self.overlay(), pid, self.height + 1)
        assert view is not None
        return view

    def flags(self, who: keys.PrivateKey) -> dict[str, Any]:
        return governance.account_flags(self.overlay(), who.address)

    def balance(self, who: keys.PrivateKey, asset: str = "LDG") -> int:
        return decode_account(self.state.get(account_key(who.address))).balances.get(asset, 0)


class _Reader:
    def __init__(self, state: dict[bytes, bytes]) -> None:
        self._state = state

    def get(self, key: bytes) -> bytes | None:
        return self._state.get(key)


def send(chain: Chain, who: keys.PrivateKey, to: keys.PrivateKey, amount: int = 1, asset: str = "LDG") -> Receipt:
    return chain.run(who, Transfer(to.address, asset, amount))


# --- genesis ---------------------------------------------------------------------------------------

def test_a_genesis_without_governance_keeps_its_hash_and_state_and_disables_governance() -> None:
    old = {"chain_id": CHAIN, "genesis_time": 0, "consensus": "pbft",
           "validators": [{"node_id": V.address, "name": "v0"}],
           "allocations": [{"address": ALICE.address, "balances": {"LDG": 10}}]}
    g = Genesis.from_json(old)
    assert g.governance is None and g.to_json() == old
    assert not any(k.startswith(b"g") for k in g.initial_writes())
    chain = Chain(g)
    tx = chain.tx(ALICE, Propose(*decode_action("freeze-account", {"account": BOB.address})))
    [receipt] = chain.block(tx)
    assert receipt.code == "not_a_member" and "disabled" in receipt.message
    assert chain.run(ALICE, Vote(tx.hash, True)).code == "not_a_member"
    assert send(chain, ALICE, BOB).ok
    assert governance.overview(chain.overlay(), 1)["enabled"] is False


def test_genesis_governance_round_trips_and_refuses_bad_committees() -> None:
    g = gov_genesis(roles=((ALICE.address, ("issuer",)),), allowlist=(ALICE.address,))
    assert Genesis.from_json(g.to_json()) == g
    base = g.to_json()

    def refused(**change: Any) -> None:
        obj = {**base, "governance": {**base["governance"], **change}}
        with pytest.raises(Rejected) as info:
            Genesis.from_json(obj)
        assert info.value.code == "bad_genesis"

    committee = base["governance"]["committee"]
    refused(committee={**committee, "members": []})
    refused(committee={**committee, "threshold": {"numerator": 4, "denominator": 3}})
    refused(committee={**committee, "threshold": {"numerator": 0, "denominator": 3}})
    refused(committee={**committee, "lifetime": 0})
    refused(committee={**committee, "members": [committee["members"][0]] * 2})
    refused(policy={"accounts": "allowlist", "issue": "anyone"}, allowlist=[])
    refused(policy={"accounts": "open", "issue": "issuers"}, roles=[])
    refused(policy={"accounts": "closed", "issue": "anyone"})


# --- proposals and votes ---------------------------------------------------------------------------

def test_a_freeze_passes_with_two_of_three_and_the_frozen_account_sends_nothing_but_receives() -> None:
    chain = Chain(gov_genesis())
    pid, r = chain.propose(M[0], "freeze-account", account=ALICE.address)
    assert r.ok and chain.proposal(pid)["status"] == "open"
    assert send(chain, ALICE, BOB).ok  # not frozen yet
    assert chain.vote(M[1], pid).ok
    view = chain.proposal(pid)
    assert view["status"] == "executed" and view["executed_height"] == chain.height
    assert view["votes"] == sorted([{"member": M[0].address, "approve": True},
                                    {"member": M[1].address, "approve": True}], key=lambda v: v["member"])
    assert chain.flags(ALICE)["frozen"] is True
    for payload in (Transfer(BOB.address, "LDG", 1), Issue("STOLEN", 5), Record("k", "v")):
        receipt = chain.run(ALICE, payload)
        assert receipt.code == "account_frozen", payload
    before = chain.balance(ALICE)
    assert send(chain, BOB, ALICE, 7).ok
    assert chain.balance(ALICE) == before + 7
    assert governance.events_at(chain.overlay(), view["executed_height"]) == [
        {"proposal": pid, "action": "freeze-account", "status": "executed"}]
    chain.decide("unfreeze-account", account=ALICE.address)
    assert send(chain, ALICE, BOB).ok


def test_a_proposal_is_rejected_once_the_threshold_is_out_of_reach_and_then_takes_no_votes() -> None:
    chain = Chain(gov_genesis())
    pid, _ = chain.propose(M[0], "freeze-account", account=ALICE.address)
    assert chain.vote(M[1], pid, approve=False).ok
    assert chain.proposal(pid)["status"] == "open"  # 1 for, 1 against, 1 undecided: 2 of 3 still possible
    assert chain.vote(M[2], pid, approve=False).ok
    view = chain.proposal(pid)
    assert view["status"] == "rejected" and view["closed_height"] == chain.height and view["executed_height"] is None
    assert chain.flags(ALICE)["frozen"] is False
    assert chain.vote(M[1], pid).code in ("already_voted", "proposal_closed")


def test_only_members_vote_once_on_known_open_proposals() -> None:
    chain = Chain(gov_genesis())
    pid, _ = chain.propose(M[0], "freeze-account", account=ALICE.address)
    assert chain.vote(M[0], pid).code == "already_voted"  # proposing counts as approving
    assert chain.vote(ALICE, pid).code == "not_a_member"
    assert chain.propose(ALICE, "freeze-account", account=BOB.address)[1].code == "not_a_member"
    assert chain.vote(M[1], "ab" * 32).code == "unknown_proposal"
    assert chain.vote(M[1], pid).ok
    assert chain.vote(M[2], pid).code == "proposal_closed"  # executed: exactly once
    assert chain.flags(ALICE)["frozen"] is True


def test_a_proposal_expires_at_the_start_of_the_first_block_after_its_lifetime() -> None:
    chain = Chain(gov_genesis(lifetime=3))
    pid, _ = chain.propose(M[0], "freeze-account", account=ALICE.address)
    made = chain.height
    for _ in range(3):
        chain.block()
    assert chain.height == made + 3
    # The view already shows what the next block will do.
    assert chain.proposal(pid)["status"] == "expired"
    receipt = chain.vote(M[1], pid)  # executes at made + 4: expired first
    assert receipt.code == "proposal_closed"
    view = chain.proposal(pid)
    assert view["status"] == "expired" and view["closed_height"] == made + 4
    assert chain.flags(ALICE)["frozen"] is False
    events = governance.events_at(chain.overlay(), made + 4)
    assert [(e["proposal"], e["status"]) for e in events] == [(pid, "expired")]


def test_a_vote_in_the_last_block_of_the_lifetime_still_counts() -> None:
    chain = Chain(gov_genesis(lifetime=2))
    pid, _ = chain.propose(M[0], "freeze-account", account=ALICE.address)
    chain.block()
    assert chain.vote(M[1], pid).ok
    assert chain.proposal(pid)["status"] == "executed"


def test_votes_in_one_block_after_a_pass_are_refused_and_the_action_runs_once() -> None:
    chain = Chain(gov_genesis())
    pid, _ = chain.propose(M[0], "grant-role", account=ALICE.address, role="issuer")
    receipts = chain.block(chain.tx(M[1], Vote(pid, True)), chain.tx(M[2], Vote(pid, True)))
    assert [r.code for r in receipts] == ["ok", "proposal_closed"]
    assert chain.flags(ALICE)["roles"] == ["issuer"]
    assert governance.role_holders(chain.overlay())["issuer"] == [ALICE.address]


def test_a_passed_proposal_that_no_longer_applies_is_rejected_with_the_reason() -> None:
    chain = Chain(gov_genesis())
    first, _ = chain.propose(M[0], "freeze-account", account=ALICE.address)
    second, _ = chain.propose(M[2], "freeze-account", account=ALICE.address)
    assert chain.vote(M[1], first).ok
    assert chain.vote(M[1], second).ok
    view = chain.proposal(second)
    assert view["status"] == "rejected" and "already frozen" in view["reason"]


def test_committee_changes_take_effect_for_later_votes() -> None:
    chain = Chain(gov_genesis())
    chain.decide("add-member", account=M[3].address, weight=3)
    c = governance.committee(chain.overlay())
    assert c is not None and c["members"][M[3].address] == 3
    # total 6, 2/3 needs 4: M0 + M1 (2) is no longer enough, M3 alone with a proposer is.
    pid, _ = chain.propose(M[0], "freeze-account", account=ALICE.address)
    assert chain.vote(M[1], pid).ok and chain.proposal(pid)["status"] == "open"
    assert chain.vote(M[3], pid).ok and chain.proposal(pid)["status"] == "executed"
    pid, _ = chain.propose(M[3], "set-threshold", numerator=1, denominator=2)
    assert chain.proposal(pid)["status"] == "open"  # 3 of 6 is not 2/3
    assert chain.vote(M[0], pid).ok and chain.proposal(pid)["status"] == "executed"
    pid, _ = chain.propose(M[3], "set-weight", account=M[0].address, weight=5)
    assert chain.proposal(pid)["status"] == "executed"  # 3 of 6 reaches 1/2
    pid, _ = chain.propose(M[0], "remove-member", account=M[3].address)  # 5 of 8
    assert chain.proposal(pid)["status"] == "executed"
    assert M[3].address not in governance.committee(chain.overlay())["members"]  # type: ignore[index]
    assert chain.propose(M[3], "set-lifetime", blocks=9)[1].code == "not_a_member"
    pid, _ = chain.propose(M[0], "set-lifetime", blocks=9)  # 5 of 7 >= 1/2
    assert governance.committee(chain.overlay())["lifetime"] == 9  # type: ignore[index]


# --- no self-lockout -------------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "args", "why"), [
    ("set-threshold", {"numerator": 4, "denominator": 3}, "at most 1"),
    ("freeze-account", {"account": M[1].address}, "committee member"),
    ("set-policy", {"accounts": "allowlist"}, "no account is allow-listed"),
    ("set-policy", {"issue": "issuers"}, "no account has the issuer role"),
    ("set-policy", {}, "at least one"),
    ("add-member", {"account": M[1].address, "weight": 1}, "already a member"),
    ("remove-member", {"account": ALICE.address}, "not a member"),
    ("set-weight", {"account": ALICE.address, "weight": 2}, "not a member"),
    ("unfreeze-account", {"account": ALICE.address}, "not frozen"),
    ("freeze-asset", {"asset": "NOPE"}, "does not exist"),
    ("unfreeze-asset", {"asset": "LDG"}, "not frozen"),
    ("revoke-role", {"account": ALICE.address, "role": "issuer"}, "does not have"),
    ("deny-account", {"account": ALICE.address}, "not allow-listed"),
])
def test_proposals_that_cannot_apply_are_invalid(action: str, args: dict[str, Any], why: str) -> None:
    chain = Chain(gov_genesis())
    pid, receipt = chain.propose(M[0], action, **args)
    assert receipt.code == "invalid_proposal" and why in receipt.message, receipt
    assert governance.proposal_view(chain.overlay(), pid, chain.height + 1) is None


def test_the_last_member_cannot_be_removed() -> None:
    chain = Chain(gov_genesis())
    chain.decide("remove-member", account=M[2].address)
    chain.decide("remove-member", account=M[1].address)
    pid, receipt = chain.propose(M[0], "remove-member", account=M[0].address)
    assert receipt.code == "invalid_proposal" and "only member" in receipt.message


def test_the_last_allowed_account_and_the_last_issuer_cannot_be_removed_under_their_policy() -> None:
    chain = Chain(gov_genesis())
    chain.decide("allow-account", account=ALICE.address)
    chain.decide("set-policy", accounts="allowlist")
    _, r = chain.propose(M[0], "deny-account", account=ALICE.address)
    assert r.code == "invalid_proposal" and "last allow-listed" in r.message
    chain.decide("grant-role", account=ALICE.address, role="issuer")
    chain.decide("set-policy", issue="issuers")
    _, r = chain.propose(M[0], "revoke-role", account=ALICE.address, role="issuer")
    assert r.code == "invalid_proposal" and "last issuer" in r.message


@pytest.mark.parametrize(("action", "args"), [
    ("launch-missiles", {}),
    ("freeze-account", {}),
    ("freeze-account", {"account": "zz"}),
    ("freeze-account", {"account": ALICE.address, "extra": 1}),
    ("add-member", {"account": ALICE.address, "weight": 0}),
    ("add-member", {"account": ALICE.address, "weight": True}),
    ("grant-role", {"account": ALICE.address, "role": "admin"}),
    ("freeze-asset", {"asset": "lower"}),
    ("set-policy", {"accounts": "closed"}),
])
def test_malformed_actions_are_refused_when_decoded(action: str, args: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as info:
        decode_action(action, args)
    assert info.value.code == "invalid_proposal"


# --- permissions -----------------------------------------------------------------------------------

def test_the_allowlist_policy_refuses_unknown_senders_until_allowed_and_members_still_govern() -> None:
    chain = Chain(gov_genesis())
    chain.decide("allow-account", account=ALICE.address)
    chain.decide("set-policy", accounts="allowlist")
    assert send(chain, ALICE, BOB).ok
    assert send(chain, BOB, ALICE).code == "not_permitted"
    assert send(chain, ALICE, CAROL).ok  # anyone may receive
    chain.decide("allow-account", account=BOB.address)
    assert send(chain, BOB, ALICE).ok
    chain.decide("deny-account", account=BOB.address)
    assert send(chain, BOB, ALICE).code == "not_permitted"
    chain.decide("set-policy", accounts="open")
    assert send(chain, BOB, ALICE).ok


def test_the_issuers_policy_lets_only_issuers_issue() -> None:
    chain = Chain(gov_genesis())
    chain.decide("grant-role", account=ALICE.address, role="issuer")
    chain.decide("grant-role", account=BOB.address, role="auditor")
    chain.decide("set-policy", issue="issuers")
    assert chain.run(BOB, Issue("BOBS", 5)).code == "not_permitted"
    assert chain.run(ALICE, Issue("GOLD", 5)).ok
    assert chain.flags(BOB)["roles"] == ["auditor"]
    chain.decide("revoke-role", account=BOB.address, role="auditor")
    assert chain.flags(BOB)["roles"] == []


def test_a_frozen_asset_cannot_be_transferred_by_anyone_until_unfrozen() -> None:
    chain = Chain(gov_genesis())
    assert chain.run(ALICE, Issue("GOLD", 100)).ok
    assert send(chain, ALICE, BOB, 10, "GOLD").ok
    chain.decide("freeze-asset", asset="GOLD")
    assert send(chain, ALICE, BOB, 1, "GOLD").code == "asset_frozen"
    assert send(chain, BOB, ALICE, 1, "GOLD").code == "asset_frozen"
    assert send(chain, ALICE, BOB, 1).ok  # other assets move
    chain.decide("unfreeze-asset", asset="GOLD")
    assert send(chain, BOB, ALICE, 1, "GOLD").ok


# --- replay and listing ----------------------------------------------------------------------------

def _eventful_chain() -> Chain:
    chain = Chain(gov_genesis())
    chain.decide("freeze-account", account=ALICE.address)
    assert send(chain, ALICE, BOB).code == "account_frozen"
    chain.decide("unfreeze-account", account=ALICE.address)
    chain.decide("allow-account", account=ALICE.address)
    chain.decide("set-policy", accounts="allowlist")
    assert send(chain, BOB, ALICE).code == "not_permitted"
    chain.decide("allow-account", account=BOB.address)
    chain.decide("deny-account", account=BOB.address)
    chain.decide("allow-account", account=BOB.address)
    assert send(chain, BOB, ALICE).ok
    chain.propose(M[0], "freeze-account", account=BOB.address)  # left to expire
    for _ in range(6):
        chain.block()
    return chain


def test_replaying_a_governed_chain_from_genesis_gives_the_same_app_hash_and_state() -> None:
    chain = _eventful_chain()
    again = Chain(chain.genesis)
    for txs in chain.blocks:
        again.block(*txs)
    assert again.app_hash == chain.app_hash and again.state == chain.state
    statuses = [p["status"] for p in governance.list_proposals(again.overlay(), None, 100, again.height + 1)]
    assert statuses[0] == "expired" and statuses.count("executed") == 7


def test_listing_filters_by_status_newest_first() -> None:
    chain = _eventful_chain()
    open_pid, _ = chain.propose(M[0], "freeze-account", account=CAROL.address)
    view = chain.overlay()
    assert [p["id"] for p in governance.list_proposals(view, "open", 10, chain.height + 1)] == [open_pid]
    executed = governance.list_proposals(view, "executed", 3, chain.height + 1)
    assert len(executed) == 3 and executed[0]["seq"] > executed[1]["seq"] > executed[2]["seq"]
    assert governance.overview(view, chain.height + 1)["open_proposals"] == [open_pid]


# --- seeded property test --------------------------------------------------------------------------

def _random_run(seed: int, blocks: int = 80) -> Chain:
    import random
    rng = random.Random(seed)
    people = [*M, ALICE, BOB]
    chain = Chain(gov_genesis(lifetime=4))
    proposals: list[str] = []
    for _ in range(blocks):
        txs = []
        for _ in range(rng.randrange(4)):
            members = sorted(governance.committee(chain.overlay())["members"])  # type: ignore[index]
            who = keys_for(rng.choice(members)) if rng.random() < 0.85 else rng.choice(people)
            open_ids = chain.overlay().gov_get(governance.OPEN_KEY) or []
            if proposals and rng.random() < 0.6:
                # Mostly open proposals; sometimes any (closed, expired), which must be refused.
                pid = rng.choice(open_ids) if open_ids and rng.random() < 0.8 else rng.choice(proposals)
                txs.append(chain.tx(who, Vote(pid, rng.random() < 0.7)))
                continue
            target = rng.choice(people).address
            action, args = rng.choice([
                ("add-member", {"account": target, "weight": rng.randint(1, 3)}),
                ("remove-member", {"account": target}),
                ("set-weight", {"account": target, "weight": rng.randint(1, 3)}),
                ("set-threshold", {"numerator": rng.randint(1, 4), "denominator": rng.randint(1, 4)}),
                ("freeze-account", {"account": target}),
                ("unfreeze-account", {"account": target}),
            ])
            tx = chain.tx(who, Propose(*decode_action(action, args)))
            txs.append(tx)
            proposals.append(tx.hash)
        chain.block(*txs)
        c = governance.committee(chain.overlay())
        assert c is not None and c["members"], "the committee never ends without a member"
        assert all(1 <= w <= governance.MAX_WEIGHT for w in c["members"].values())
        assert 1 <= c["numerator"] <= c["denominator"], "the threshold stays reachable by the members"
        assert not any(chain.flags(keys_for(m))["frozen"] for m in c["members"]), "members are never frozen"
        open_ids = chain.overlay().gov_get(governance.OPEN_KEY) or []
        assert all(governance.proposal_view(chain.overlay(), i, chain.height)["status"] == "open"  # type: ignore[index]
                   for i in open_ids)
    return chain


_KEYS = {k.address: k for k in (*M, ALICE, BOB, CAROL)}


def keys_for(address: str) -> keys.PrivateKey:
    return _KEYS[address]


@pytest.mark.parametrize("seed", range(6))
def test_random_proposals_and_votes_keep_the_committee_sound_and_execute_deterministically(seed: int) -> None:
    chain = _random_run(seed)
    again = _random_run(seed)
    assert again.app_hash == chain.app_hash
    replay = Chain(chain.genesis)
    for txs in chain.blocks:
        replay.block(*txs)
    assert replay.app_hash == chain.app_hash
    # Every closed proposal is logged exactly once, at the height it closed.
    logged: list[str] = []
    for height in range(1, chain.height + 1):
        logged += [e["proposal"] for e in governance.events_at(chain.overlay(), height)]
    assert len(logged) == len(set(logged))
    for pid in logged:
        assert chain.proposal(pid)["status"] != "open"


def test_a_chain_without_governance_reads_only_two_governance_keys_per_block() -> None:
    """The hot path stays cheap where governance is off: no flag reads per sender or asset."""
    g = Genesis(CHAIN, 0, "pbft", (Validator(V.address, "v0"),), ((ALICE.address, 1000),))
    state = dict(g.initial_writes())
    read: list[bytes] = []

    class Recording:
        def get(self, key: bytes) -> bytes | None:
            read.append(key)
            return state.get(key)

    txs = [sign_tx(ALICE, CHAIN, n, Transfer(BOB.address, "LDG", 1)) for n in range(3)]
    result = execute(Recording(), CHAIN, 1, txs, g.initial_app_hash())
    assert all(r.ok for r in result.receipts)
    assert sorted({k for k in read if k.startswith(b"g")}) == [governance.OPEN_KEY, governance.POLICY_KEY]


# --- permission checks remembered within one block (StateOverlay) ----------------------------------

def _decide_in_block(chain: Chain, action: str, before: list[Transaction], after: list[Transaction],
                     **args: Any) -> tuple[list[Receipt], list[Receipt]]:
    """Propose `action` in one block, then one block of `before`, the deciding vote, `after`."""
    pid, r = chain.propose(M[0], action, **args)
    assert r.ok, r
    receipts = chain.block(*before, chain.tx(M[1], Vote(pid, True)), *after)
    assert receipts[len(before)].ok and chain.proposal(pid)["status"] == "executed"
    return receipts[:len(before)], receipts[len(before) + 1:]


def test_a_freeze_decided_mid_block_stops_the_senders_next_transaction_in_that_block() -> None:
    """Passed checks are remembered per block; a governance write in the block must end that."""
    chain = Chain(gov_genesis())
    send1, send2 = (chain.tx(ALICE, Transfer(BOB.address, "LDG", 1)) for _ in range(2))
    before, after = _decide_in_block(chain, "freeze-account", [send1], [send2], account=ALICE.address)
    assert [r.code for r in before] == ["ok"]
    assert [r.code for r in after] == ["account_frozen"]
    assert send(chain, BOB, ALICE).ok


def test_an_allowlist_policy_decided_mid_block_stops_unlisted_senders_in_that_block() -> None:
    chain = Chain(gov_genesis())
    chain.decide("allow-account", account=ALICE.address)
    txs = [chain.tx(who, Transfer(CAROL.address, "LDG", 1)) for who in (ALICE, BOB, ALICE, BOB)]
    before, after = _decide_in_block(chain, "set-policy", txs[:2], txs[2:], accounts="allowlist")
    assert [r.code for r in before] == ["ok", "ok"]
    assert [r.code for r in after] == ["ok", "not_permitted"]


def test_an_asset_frozen_mid_block_cannot_move_later_in_that_block() -> None:
    chain = Chain(gov_genesis())
    assert chain.run(ALICE, Issue("GOLD", 100)).ok
    txs = [chain.tx(ALICE, Transfer(BOB.address, asset, 1)) for asset in ("GOLD", "GOLD", "LDG")]
    before, after = _decide_in_block(chain, "freeze-asset", txs[:1], txs[1:], asset="GOLD")
    assert [r.code for r in before] == ["ok"]
    assert [r.code for r in after] == ["asset_frozen", "ok"]


def test_a_member_removed_mid_block_cannot_vote_later_in_that_block() -> None:
    chain = Chain(gov_genesis())
    other, r = chain.propose(M[0], "set-lifetime", blocks=9)
    assert r.ok
    before, after = _decide_in_block(chain, "remove-member", [chain.tx(M[2], Vote(other, False))],
                                     [chain.tx(M[2], Vote(other, False))], account=M[2].address)
    assert [r.code for r in before] == ["ok"]
    assert [r.code for r in after] == ["not_a_member"]


def test_an_overlay_refuses_again_after_a_refusal_and_admits_again_after_a_governance_write() -> None:
    """Refusals are never remembered: an overlay that refused a sender re-reads after each write."""
    chain = Chain(gov_genesis())
    chain.decide("freeze-account", account=ALICE.address)
    overlay = chain.overlay()
    tx = chain.tx(ALICE, Transfer(BOB.address, "LDG", 1))
    assert overlay.check_executes(tx).code == "account_frozen"
    assert overlay.check_executes(tx).code == "account_frozen"
    overlay.gov_put(governance.flags_key(ALICE.address), {"allowed": False, "frozen": False, "roles": []})
    assert overlay.check_executes(tx).ok
    overlay.gov_put(governance.flags_key(ALICE.address), {"allowed": False, "frozen": True, "roles": []})
    assert overlay.check_executes(tx).code == "account_frozen"
