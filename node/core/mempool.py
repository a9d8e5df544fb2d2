"""The mempool: transactions admitted by this node and waiting for a block.

Admission (`add`) runs the cheap checks first and the signature last but one, so floods of
duplicates cost little, and it verifies each signature once: the block checker asks `is_verified`
and skips transactions this node already admitted with the same signature, and tells the mempool
(`note_verified`) about the ones it verified itself, so that the same transaction arriving later
by gossip is not verified a second time. `is_stale` lets the node skip verifying a transaction the
mempool is bound to refuse anyway (its nonce was already used).

What admission refuses, in order (stable codes; the API maps them to HTTP statuses):

    wrong_chain_id        the transaction names another chain
    duplicate             the same transaction is already pending here, or already committed
    nonce_used            the sender already executed a transaction with this nonce
    nonce_pending         another pending transaction of this sender holds this nonce
    nonce_too_far         the nonce is more than `max_future_per_sender` past the sender's next
                          pending nonce (the future nonces held per sender are bounded that way)
    mempool_full          `max_txs` or `max_bytes` reached; retry after `retry_after_s`
    invalid_signature     the signature does not verify
    insufficient_funds,   the transaction would fail if executed after the sender's committed state
    unknown_asset,        and its own pending transactions, in nonce order. Only a sender can debit
    asset_exists          its own account and assets never disappear, so a transaction admitted
                          this way cannot fail for funds or an unknown asset on chain. Funds that
                          other senders' pending transactions would bring are NOT counted until
                          they commit: admission is conservative. An `issue` of a symbol that a
                          pending `issue` of another sender already claims is refused too.

Governance (`ledger.governance`) adds its refusals the same way, from the sender's pending state
on committed state: `account_frozen`, `not_permitted`, `asset_frozen`, `not_a_member`,
`unknown_proposal`, `proposal_closed` (also when the proposal's lifetime ends before the next
block), `already_voted`, `invalid_proposal`. These CAN change under a pending transaction (a freeze
commits after it was admitted): a commit that changes an account's flags re-checks that sender,
and one that changes the policy or an asset's flags re-checks every sender; what still slips
through fails in its block with the same code.

Decoding (`malformed`, `invalid_amount`, `invalid_asset`, `record_too_large`) happens before
admission, in `ledger.tx.decode_tx`.

A transaction whose nonce is the sender's next pending nonce is *ready*; one further ahead is
*future* and waits for the gap to fill, at most `tx_ttl_s` seconds. After a block commits
(`on_committed`) the committed transactions leave, and every sender the block touched is re-checked
against the new committed state: transactions whose nonce another transaction used, or that would
now fail, are dropped. Dropped transactions are reported to the caller (to answer tx status and
waiters) with the reason.

`reap` picks a proposal: ready transactions, each sender's in nonce order, one per sender per round
so that one busy sender cannot starve the others, up to a count and a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from consensus.api import ChainTip
from ledger.state import ParseMemo, StateOverlay, StateReader
from ledger.tx import SIGNING_PREFIX, Issue, Transaction
from node.service import SubmitOutcome

OVERLAY_SLACK = 256

# `Transaction.encode()` is {"body":<canonical body>,"signature":"<128 hex>"} and the canonical body
# is the signing bytes minus their prefix, so the size is known without encoding again.
_ENVELOPE_BYTES = len(b'{"body":,"signature":""}') + 128 - len(SIGNING_PREFIX)


def encoded_size(tx: Transaction) -> int:
    """len(tx.encode()), the bytes the transaction takes in a block, without re-encoding it."""
    return len(tx.signing_bytes) + _ENVELOPE_BYTES


def _is_front(ready: deque[_Entry], committed: Sequence[Transaction]) -> bool:
    if len(committed) > len(ready):
        return False
    return all(ready[i].tx.hash == tx.hash for i, tx in enumerate(committed))


class CommittedView(Protocol):
    """What the mempool reads of committed data (the node's `Store` provides it)."""

    @property
    def state(self) -> StateReader: ...

    @property
    def tip(self) -> ChainTip: ...

    def recently_committed(self, tx_hash: str) -> bool:
        """Committed in the chain's newest epochs (`Store.recently_committed`): a bounded read."""
        ...


@dataclass(frozen=True)
class MempoolLimits:
    max_txs: int = 50_000
    max_bytes: int = 64 * 1024 * 1024
    max_future_per_sender: int = 64
    tx_ttl_s: float = 600.0
    retry_after_s: int = 1
    dropped_memory: int = 10_000


@dataclass(frozen=True, slots=True)
class Dropped:
    """A transaction that left the mempool without being committed, and why."""

    hash: str
    code: str
    message: str


class _Entry:
    __slots__ = ("tx", "size", "added_s", "sent_s")

    def __init__(self, tx: Transaction, size: int, added_s: float) -> None:
        self.tx = tx
        self.size = size
        self.added_s = added_s
        self.sent_s = added_s  # when it was last gossiped (at admission, by the node)


class _Sender:
    """One sender's pending transactions: `ready` from the committed nonce on, contiguous and
    checked against `overlay` (committed state plus `ready` applied); `future` past a gap.

    `epoch` counts the commits the overlay has seen: after a commit that only took a prefix of
    `ready`, the overlay is kept (cheap) even though credits from others may have made it stale.
    Stale only ever means "too poor", so a refusal from a stale overlay is re-checked on a fresh one.
    """

    __slots__ = ("address", "committed_nonce", "ready", "future", "overlay", "epoch", "applied")

    def __init__(self, address: str, reader: StateReader, chain_id: str, epoch: int,
                 memo: ParseMemo | None) -> None:
        self.address = address
        self.overlay = StateOverlay(reader, chain_id, memo)
        self.committed_nonce = self.overlay.account(address).nonce
        self.ready: deque[_Entry] = deque()
        self.future: dict[int, _Entry] = {}
        self.epoch = epoch
        self.applied = 0  # transactions applied to `overlay`; it is rebuilt when this grows too far

    @property
    def next_nonce(self) -> int:
        return self.committed_nonce + len(self.ready)


class Mempool:
    """Pending transactions of one node. Not thread-safe: only the node's event loop calls it."""

    def __init__(self, committed: CommittedView, chain_id: str, limits: MempoolLimits,
                 clock: Callable[[], float], verify: Callable[[Transaction], bool] | None = None,
                 memo: ParseMemo | None = None) -> None:
        self._committed = committed
        self._memo = memo
        self.chain_id = chain_id
        self.limits = limits
        self._clock = clock
        self._verify = verify or Transaction.signature_valid
        self._by_hash: dict[str, _Entry] = {}
        self._senders: dict[str, _Sender] = {}
        self._future_order: deque[tuple[float, str]] = deque()
        self._pending_issues: dict[str, str] = {}  # asset symbol -> sender with a ready issue of it
        self._dropped: OrderedDict[str, Dropped] = OrderedDict()
        self._bytes = 0
        self._ready_total = 0
        self._reap_start = 0
        self._epoch = 0  # commits seen
        self._unreported: list[Dropped] = []  # drops found outside on_committed/expire
        # tx hash -> signature, for transactions verified outside admission (in a proposal), oldest first
        self._verified_elsewhere: OrderedDict[str, bytes] = OrderedDict()

    # --- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, tx_hash: str) -> Transaction | None:
        entry = self._by_hash.get(tx_hash)
        return None if entry is None else entry.tx

    def is_verified(self, tx: Transaction) -> bool:
        """True when this exact transaction (same signature) was verified here before."""
        entry = self._by_hash.get(tx.hash)
        if entry is not None:
            return entry.tx.signature == tx.signature
        return self._verified_elsewhere.get(tx.hash) == tx.signature

    def take_stale(self, age_s: float, limit: int) -> list[Transaction]:
        """Up to `limit` pending transactions added and last gossiped at least `age_s` ago, oldest
        first; each is marked as gossiped now (the caller sends them out again).

        Entries are kept in admission order, so the scan stops at the first one added later.
        """
        now = self._clock()
        before_s = now - age_s
        out: list[Transaction] = []
        for entry in self._by_hash.values():
            if entry.added_s > before_s or len(out) >= limit:
                break
            if entry.sent_s <= before_s:
                entry.sent_s = now
                out.append(entry.tx)
        return out

    def note_verified(self, tx: Transaction) -> None:
        """Remember a signature found valid outside admission (bounded by `max_txs`, oldest out)."""
        memory = self._verified_elsewhere
        memory[tx.hash] = tx.signature
        if len(memory) > self.limits.max_txs:
            memory.popitem(last=False)

    def is_stale(self, tx: Transaction) -> bool:
        """True when admission would refuse `tx` for its nonce before looking at its signature."""
        sender = self._senders.get(tx.sender)
        if sender is not None:
            return tx.nonce < sender.next_nonce and tx.hash not in self._by_hash
        return tx.nonce < StateOverlay(self._committed.state, self.chain_id, self._memo).account(tx.sender).nonce

    def dropped(self, tx_hash: str) -> Dropped | None:
        return self._dropped.get(tx_hash)

    @property
    def ready_total(self) -> int:
        """How many transactions could go into a block now."""
        return self._ready_total

    def next_nonce(self, address: str) -> int | None:
        """The sender's next pending nonce, when it has pending transactions here."""
        sender = self._senders.get(address)
        return None if sender is None else sender.next_nonce

    # --- admission --------------------------------------------------------------------------

    def add(self, txs: Sequence[Transaction], verified: Sequence[bool | None] | None = None
            ) -> list[SubmitOutcome]:
        """Admit decoded transactions in order; one outcome per transaction.

        `verified[i]`, when given and not None, is the result of checking `txs[i]`'s signature
        already (the node verifies batches on worker threads); otherwise admission verifies it when
        it gets that far.
        """
        now = self._clock()
        if verified is None:
            return [self._add_one(tx, now, None) for tx in txs]
        if len(verified) != len(txs):
            raise ValueError("verified must have one entry per transaction")
        return [self._add_one(tx, now, ok) for tx, ok in zip(txs, verified, strict=True)]

    def take_dropped(self) -> list[Dropped]:
        """Transactions dropped while admitting others (a stale sender re-checked); report them."""
        dropped, self._unreported = self._unreported, []
        return dropped

    def _refuse(self, tx: Transaction, code: str, message: str) -> SubmitOutcome:
        return SubmitOutcome(tx.hash, code, message)

    def _add_one(self, tx: Transaction, now: float, verified: bool | None,
                 retry: bool = True) -> SubmitOutcome:
        if tx.chain_id != self.chain_id:
            return self._refuse(tx, "wrong_chain_id",
                                f"chain_id is {tx.chain_id!r}; this chain is {self.chain_id!r}")
        if tx.hash in self._by_hash:
            return self._refuse(tx, "duplicate", "this transaction is already pending")
        sender = self._senders.get(tx.sender)
        new_sender = sender is None
        if sender is None:
            sender = _Sender(tx.sender, self._committed.state, self.chain_id, self._epoch, self._memo)
        if tx.nonce < sender.committed_nonce:
            if self._committed.recently_committed(tx.hash):
                return self._refuse(tx, "duplicate", "this transaction is already committed")
            return self._refuse(tx, "nonce_used", f"nonce {tx.nonce} was already used; the sender's next "
                                                  f"nonce is {sender.committed_nonce}")
        next_nonce = sender.next_nonce
        if tx.nonce < next_nonce or tx.nonce in sender.future:
            return self._refuse(tx, "nonce_pending", f"another pending transaction of this sender already "
                                                     f"has nonce {tx.nonce}")
        if tx.nonce - next_nonce > self.limits.max_future_per_sender:
            return self._refuse(tx, "nonce_too_far", f"nonce {tx.nonce} is ahead of the sender's next nonce "
                                                     f"{next_nonce} by more than the "
                                                     f"{self.limits.max_future_per_sender} this node holds")
        size = encoded_size(tx)
        if len(self._by_hash) >= self.limits.max_txs or self._bytes + size > self.limits.max_bytes:
            return SubmitOutcome(tx.hash, "mempool_full", "the mempool is full; retry later",
                                 retry_after_s=self.limits.retry_after_s)
        if not (self._verify(tx) if verified is None else verified):
            return self._refuse(tx, "invalid_signature", "the signature does not verify for the sender's key")
        entry = _Entry(tx, size, now)
        if tx.nonce == next_nonce:
            refusal = self._admit_ready(sender, entry)
            if refusal is not None:
                if retry and sender.epoch != self._epoch:
                    # Maybe just too stale to see funds or an asset that arrived since: look again.
                    self._unreported.extend(self._recheck(sender))
                    return self._add_one(tx, now, True, retry=False)
                return self._refuse(tx, refusal[0], refusal[1])
            if new_sender:
                self._senders[tx.sender] = sender
            self._insert(entry)
            self._promote(sender)
        else:
            if new_sender:
                self._senders[tx.sender] = sender
            sender.future[tx.nonce] = entry
            self._future_order.append((now, tx.hash))
            if len(self._future_order) > 2 * self.limits.max_txs:
                self._compact_future_order()
            self._insert(entry)
        return SubmitOutcome(tx.hash)

    def _insert(self, entry: _Entry) -> None:
        self._by_hash[entry.tx.hash] = entry
        self._bytes += entry.size

    def _admit_ready(self, sender: _Sender, entry: _Entry) -> tuple[str, str] | None:
        """Check `entry` (the sender's next nonce) against its pending state; apply it when it passes."""
        tx = entry.tx
        payload = tx.payload
        if isinstance(payload, Issue):
            claimant = self._pending_issues.get(payload.asset)
            if claimant is not None and claimant != tx.sender:
                return "asset_exists", f"a pending transaction already issues asset {payload.asset}"
        height = self._committed.tip.height + 1
        sender.overlay.height = height
        receipt = sender.overlay.check_executes(tx)
        if not receipt.ok:
            return receipt.code, receipt.message
        sender.overlay.apply_checked(tx, height)  # checked just above: not again
        sender.applied += 1
        sender.ready.append(entry)
        self._ready_total += 1
        if isinstance(payload, Issue):
            self._pending_issues[payload.asset] = tx.sender
        return None

    def _promote(self, sender: _Sender) -> list[Dropped]:
        """Move future transactions that became next in line to ready; drop those that now fail."""
        dropped: list[Dropped] = []
        while sender.future:
            entry = sender.future.pop(sender.next_nonce, None)
            if entry is None:
                break
            refusal = self._admit_ready(sender, entry)
            if refusal is not None:
                dropped.append(self._forget(entry, refusal[0], refusal[1]))
                break
        return dropped

    def _forget(self, entry: _Entry, code: str, message: str) -> Dropped:
        del self._by_hash[entry.tx.hash]
        self._bytes -= entry.size
        record = Dropped(entry.tx.hash, code, message)
        if self.limits.dropped_memory:
            self._dropped[entry.tx.hash] = record
            while len(self._dropped) > self.limits.dropped_memory:
                self._dropped.popitem(last=False)
        return record

    # --- proposals --------------------------------------------------------------------------

    def reap(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """Ready transactions for a proposal: per-sender nonce order, one per sender per round."""
        active = [s for s in self._senders.values() if s.ready]
        if not active or max_txs <= 0:
            return []
        start = self._reap_start % len(active)
        self._reap_start += 1
        order = active[start:] + active[:start]
        cursors = [0] * len(order)
        out: list[Transaction] = []
        budget = max_bytes
        live = list(range(len(order)))
        while live and len(out) < max_txs:
            still = []
            for i in live:
                sender = order[i]
                pos = cursors[i]
                entry = sender.ready[pos]
                if entry.size > budget:
                    continue  # this sender's next tx does not fit; its later ones may not jump it
                out.append(entry.tx)
                budget -= entry.size
                cursors[i] = pos + 1
                if pos + 1 < len(sender.ready):
                    still.append(i)
                if len(out) >= max_txs:
                    break
            live = still
        return out

    # --- after a commit ---------------------------------------------------------------------

    def on_committed(self, txs: Sequence[Transaction], writes: Mapping[bytes, bytes]) -> list[Dropped]:
        """Remove a committed block's transactions; re-check senders whose pending state it broke.

        The common case is cheap: a sender whose committed transactions are exactly the front of
        its ready queue just loses that front (what remains was checked against a state with less
        or equal funds, so it still passes). Anything else is re-checked from committed state.
        """
        self._epoch += 1
        by_sender: dict[str, list[Transaction]] = {}
        for tx in txs:
            by_sender.setdefault(tx.sender, []).append(tx)
        recheck: set[str] = set()
        for key in writes:
            if key[:1] == b"s":
                claimant = self._pending_issues.get(key[1:].decode("ascii"))
                if claimant is not None:
                    recheck.add(claimant)
            elif key[:2] == b"ga":  # an account's governance flags (frozen, allowed, roles)
                address = key[2:].hex()
                if address in self._senders:
                    recheck.add(address)
            elif key[:2] in (b"gp", b"gs"):  # the policy, or an asset's frozen flag: rare, check all
                recheck.update(self._senders)
        for address, committed in by_sender.items():
            sender = self._senders.get(address)
            if sender is None:
                continue
            if address in recheck or not _is_front(sender.ready, committed):
                recheck.add(address)
                continue
            for _ in committed:
                self._remove_ready(sender, sender.ready.popleft())
            sender.committed_nonce += len(committed)
            if not sender.ready and not sender.future:
                del self._senders[address]
            elif sender.applied > 2 * len(sender.ready) + OVERLAY_SLACK:
                recheck.add(address)  # keep the overlay's memory proportional to what is pending
        for tx in txs:
            entry = self._by_hash.pop(tx.hash, None)
            if entry is not None:
                self._bytes -= entry.size
        dropped = self.take_dropped()
        for address in recheck:
            sender = self._senders.get(address)
            if sender is not None:
                dropped.extend(self._recheck(sender))
        return dropped

    def _remove_ready(self, sender: _Sender, entry: _Entry) -> None:
        self._ready_total -= 1
        payload = entry.tx.payload
        if isinstance(payload, Issue) and self._pending_issues.get(payload.asset) == sender.address:
            del self._pending_issues[payload.asset]

    def _recheck(self, old: _Sender) -> list[Dropped]:
        dropped: list[Dropped] = []
        self._ready_total -= len(old.ready)
        for entry in old.ready:
            payload = entry.tx.payload
            if isinstance(payload, Issue) and self._pending_issues.get(payload.asset) == old.address:
                del self._pending_issues[payload.asset]
        sender = _Sender(old.address, self._committed.state, self.chain_id, self._epoch, self._memo)
        waiting: dict[int, _Entry] = {}
        for entry in [*old.ready, *old.future.values()]:
            if entry.tx.hash not in self._by_hash:
                continue  # committed in this block
            if entry.tx.nonce < sender.committed_nonce:
                dropped.append(self._forget(entry, "nonce_used", f"another transaction with nonce "
                                                                  f"{entry.tx.nonce} was committed"))
            else:
                waiting[entry.tx.nonce] = entry
        sender.future = waiting
        dropped.extend(self._promote(sender))
        now = self._clock()
        for entry in old.ready:
            if sender.future.get(entry.tx.nonce) is entry:
                # It was ready and is behind a gap now: its TTL starts here.
                self._future_order.append((now, entry.tx.hash))
        if sender.ready or sender.future:
            self._senders[old.address] = sender
        else:
            del self._senders[old.address]
        return dropped

    def _compact_future_order(self) -> None:
        """Forget expiry slots of transactions that left or became ready, keeping the deque bounded."""
        live = []
        for added_s, tx_hash in self._future_order:
            entry = self._by_hash.get(tx_hash)
            if entry is None:
                continue
            sender = self._senders.get(entry.tx.sender)
            if sender is not None and sender.future.get(entry.tx.nonce) is entry:
                live.append((added_s, tx_hash))
        self._future_order = deque(live)

    def expire(self) -> list[Dropped]:
        """Drop future-nonce transactions that waited longer than the TTL for their gap to fill."""
        deadline = self._clock() - self.limits.tx_ttl_s
        dropped: list[Dropped] = []
        order = self._future_order
        while order and order[0][0] <= deadline:
            _, tx_hash = order.popleft()
            entry = self._by_hash.get(tx_hash)
            if entry is None:
                continue
            sender = self._senders.get(entry.tx.sender)
            if sender is None or sender.future.get(entry.tx.nonce) is not entry:
                continue  # it became ready meanwhile; ready transactions do not expire
            del sender.future[entry.tx.nonce]
            message = f"nonce {entry.tx.nonce} waited over {self.limits.tx_ttl_s:g}s for the nonces before it"
            dropped.append(self._forget(entry, "expired", message))
            if not sender.ready and not sender.future:
                del self._senders[sender.address]
        return dropped
