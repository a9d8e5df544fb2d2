"""Admission of unauthenticated inbound connections: who may start a handshake, and how many at once.

Pure bookkeeping, no I/O and no clock of its own (every call is handed `now`, in seconds), so the
listener can ask it before the WebSocket upgrade and tests can drive it with a fake clock.

Two pools, because a stranger must never be able to lock the validators out:

- Outsiders: connections that claim no node id (or come from an older dialer that sends none).
  At most `max_pending` at once in all, at most `max_pending_per_source` from one source address,
  and each source draws from a token bucket (`rate_per_s`, `burst`) on every attempt.
- Claimed: connections whose upgrade request names a known node id (validator or observer). Each
  id has its own `max_pending_per_peer` slots, so outsiders cannot fill them; the handshake still
  has to prove the key. When an id's slots are full, the newest claim evicts the oldest one that
  has not said hello yet (else the oldest): a genuine dialer whose earlier attempt is still
  hanging (or an impostor squatting on its id) never shuts it out. Claims draw from a token
  bucket per (source, id), not per source, so a flood from an address the validators share (a
  NAT, or loopback in tests) does not starve them.

Memory is bounded: buckets are kept for at most `max_sources` keys (least recently used go first;
a forgotten key starts again with a full bucket, which only ever errs towards admitting).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field


class TokenBuckets:
    """One token bucket per key: `burst` tokens, refilled at `rate_per_s`; an attempt takes one."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be positive, burst and max_keys at least 1")
        self.rate_per_s, self.burst, self.max_keys = rate_per_s, burst, max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float) -> bool:
        """Spend one token of `key`'s bucket; False (nothing spent) if it is empty."""
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed


@dataclass(eq=False)
class Ticket:
    """One admitted, still unauthenticated connection; hand it back with `Admission.release`."""

    source: str
    claimed: str | None  # the node id the upgrade request named, if it named a known one
    evicted: bool = False  # set when a newer claim for the same id took this slot
    said_hello: bool = False  # its hello came (with the claimed id); it is only a round trip from done
    released: bool = False


@dataclass(frozen=True)
class Decision:
    """`ticket` when admitted (and `evicted`: a ticket whose connection must now be dropped);
    otherwise `refusal`: "rate_limited", "busy_source" or "busy"."""

    ticket: Ticket | None = None
    evicted: Ticket | None = None
    refusal: str = ""


@dataclass
class _PeerSlots:
    pending: deque[Ticket] = field(default_factory=deque)


class Admission:
    """The two pools of pending handshakes of one listener (see the module docstring)."""

    def __init__(self, *, max_pending: int, max_pending_per_source: int, max_pending_per_peer: int,
                 rate_per_s: float, burst: int, max_sources: int) -> None:
        if min(max_pending, max_pending_per_source, max_pending_per_peer) < 1:
            raise ValueError("every pending-handshake limit must be at least 1")
        self.max_pending = max_pending
        self.max_pending_per_source = max_pending_per_source
        self.max_pending_per_peer = max_pending_per_peer
        self._source_buckets = TokenBuckets(rate_per_s, burst, max_sources)
        self._claim_buckets = TokenBuckets(rate_per_s, burst, max_sources)
        self._outsiders = 0
        self._outsiders_by_source: dict[str, int] = {}
        self._claims: dict[str, _PeerSlots] = {}

    @property
    def outsiders_pending(self) -> int:
        return self._outsiders

    def claims_pending(self, node_id: str) -> int:
        slots = self._claims.get(node_id)
        return 0 if slots is None else len(slots.pending)

    def admit(self, source: str, claimed: str | None, now: float) -> Decision:
        """Admit a new connection from `source` (claiming the known id `claimed`, or None) or refuse it."""
        if claimed is not None:
            if not self._claim_buckets.take((source, claimed), now):
                return Decision(refusal="rate_limited")
            slots = self._claims.setdefault(claimed, _PeerSlots())
            evicted = None
            if len(slots.pending) >= self.max_pending_per_peer:
                evicted = next((t for t in slots.pending if not t.said_hello), slots.pending[0])
                slots.pending.remove(evicted)
                evicted.evicted = True
            ticket = Ticket(source, claimed)
            slots.pending.append(ticket)
            return Decision(ticket=ticket, evicted=evicted)
        if not self._source_buckets.take(source, now):
            return Decision(refusal="rate_limited")
        from_source = self._outsiders_by_source.get(source, 0)
        if from_source >= self.max_pending_per_source:
            return Decision(refusal="busy_source")
        if self._outsiders >= self.max_pending:
            return Decision(refusal="busy")
        self._outsiders += 1
        self._outsiders_by_source[source] = from_source + 1
        return Decision(ticket=Ticket(source, None))

    def release(self, ticket: Ticket) -> None:
        """The connection's handshake ended (done, failed, timed out or evicted); free its slot."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.claimed is not None:
            slots = self._claims.get(ticket.claimed)
            if slots is not None and not ticket.evicted:
                slots.pending.remove(ticket)
            if slots is not None and not slots.pending:
                del self._claims[ticket.claimed]
            return
        self._outsiders -= 1
        left = self._outsiders_by_source[ticket.source] - 1
        if left:
            self._outsiders_by_source[ticket.source] = left
        else:
            del self._outsiders_by_source[ticket.source]
