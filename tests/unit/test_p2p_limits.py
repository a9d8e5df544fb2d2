"""Admission of unauthenticated p2p connections (`p2p.limits`), driven by a fake clock.

The rule under test: an outsider is limited per source address (pending handshakes and a token
bucket of attempts), and whatever outsiders do, a known node id still gets a handshake slot.
"""

from __future__ import annotations

import pytest

from p2p.limits import Admission, TokenBuckets

VALIDATOR = "aa" * 32
OTHER = "bb" * 32


def admission(**overrides: int | float) -> Admission:
    settings: dict[str, int | float] = {
        "max_pending": 4, "max_pending_per_source": 2, "max_pending_per_peer": 2,
        "rate_per_s": 1.0, "burst": 3, "max_sources": 100,
    }
    settings.update(overrides)
    return Admission(**settings)  # type: ignore[arg-type]


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(rate_per_s=2.0, burst=3, max_keys=10)
    assert [buckets.take("10.0.0.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("10.0.0.2", 0.0)  # another source has its own bucket
    assert not buckets.take("10.0.0.1", 0.25)  # half a token
    assert buckets.take("10.0.0.1", 0.5)  # one token back after 1 / rate
    assert not buckets.take("10.0.0.1", 0.5)
    assert [buckets.take("10.0.0.1", 100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_token_buckets_forget_the_least_recently_used_source_first() -> None:
    buckets = TokenBuckets(rate_per_s=1.0, burst=1, max_keys=2)
    assert buckets.take("a", 0.0) and buckets.take("b", 0.0)
    assert not buckets.take("a", 0.0)  # a is now the most recently used
    assert buckets.take("c", 0.0)  # evicts b
    assert len(buckets) == 2
    assert buckets.take("b", 0.0)  # b forgotten: a fresh, full bucket (errs towards admitting)
    assert not buckets.take("c", 0.0)


def test_an_outsider_is_held_to_its_pending_slots_and_its_attempt_rate() -> None:
    a = admission(burst=10)
    first, second = a.admit("10.0.0.9", None, 0.0), a.admit("10.0.0.9", None, 0.0)
    assert first.ticket is not None and second.ticket is not None
    assert a.admit("10.0.0.9", None, 0.0).refusal == "busy_source"
    assert a.admit("10.0.0.8", None, 0.0).ticket is not None  # another source is not held back
    a.release(first.ticket)
    a.release(first.ticket)  # releasing twice frees one slot only
    assert a.outsiders_pending == 2
    assert a.admit("10.0.0.9", None, 0.0).ticket is not None

    limited = admission(burst=3, max_pending_per_source=100, max_pending=100)
    decisions = [limited.admit("10.0.0.9", None, 0.0) for _ in range(4)]
    assert [d.refusal for d in decisions] == ["", "", "", "rate_limited"]
    assert limited.admit("10.0.0.9", None, 1.0).ticket is not None  # the bucket refills


def test_outsiders_from_many_sources_fill_only_the_outsider_pool() -> None:
    a = admission(max_pending=4, burst=100)
    for i in range(4):
        assert a.admit(f"10.0.0.{i}", None, 0.0).ticket is not None
    assert a.admit("10.0.0.99", None, 0.0).refusal == "busy"
    # Validators still get in, from anywhere, including an address an outsider also uses.
    claim = a.admit("10.0.0.1", VALIDATOR, 0.0)
    assert claim.ticket is not None and claim.evicted is None
    assert a.admit("127.0.0.1", OTHER, 0.0).ticket is not None


def test_a_flood_from_a_shared_address_does_not_drain_a_validators_attempts() -> None:
    """Loopback (or a NAT): the attacker and the validators have one source address."""
    a = admission(burst=2)
    refusals = [a.admit("127.0.0.1", None, 0.0).refusal for _ in range(3)]
    assert refusals == ["", "", "rate_limited"]  # the outsiders' bucket for 127.0.0.1 is empty
    for _ in range(2):  # the validator's bucket is its own: (source, claimed id)
        decision = a.admit("127.0.0.1", VALIDATOR, 0.0)
        assert decision.ticket is not None
        a.release(decision.ticket)
    assert a.admit("127.0.0.1", VALIDATOR, 0.0).refusal == "rate_limited"  # but it is a bucket too
    assert a.admit("127.0.0.1", OTHER, 0.0).ticket is not None


def test_a_new_claim_evicts_the_oldest_pending_claim_of_the_same_id() -> None:
    a = admission(max_pending_per_peer=2, burst=100)
    squatters = [a.admit("10.6.6.6", VALIDATOR, 0.0).ticket for _ in range(2)]
    assert all(t is not None for t in squatters)
    genuine = a.admit("10.1.1.1", VALIDATOR, 0.0)
    assert genuine.ticket is not None and genuine.evicted is squatters[0]
    assert squatters[0] is not None and squatters[0].evicted
    assert a.claims_pending(VALIDATOR) == 2
    a.release(squatters[0])  # the evicted connection goes away: nothing more to free
    assert a.claims_pending(VALIDATOR) == 2
    a.release(genuine.ticket)
    assert squatters[1] is not None
    a.release(squatters[1])
    assert a.claims_pending(VALIDATOR) == 0
    assert a.claims_pending(OTHER) == 0


def test_a_claim_that_said_hello_is_evicted_last() -> None:
    a = admission(max_pending_per_peer=2, burst=100)
    genuine = a.admit("10.1.1.1", VALIDATOR, 0.0).ticket
    squatter = a.admit("10.6.6.6", VALIDATOR, 0.0).ticket
    assert genuine is not None and squatter is not None
    genuine.said_hello = True  # one round trip from done: a silent newcomer must not cut it off
    assert a.admit("10.6.6.6", VALIDATOR, 0.0).evicted is squatter
    assert not genuine.evicted


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        admission(max_pending_per_source=0)
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_s=0, burst=1, max_keys=1)
