"""Block sync: how a node that is behind fetches final blocks from its peers, and serves its own.

Heights. Every node broadcasts a small status (`{"height", "hash"}` of its head) on the "status"
topic every `status_interval_s`, and a validator also sends it to its observers as soon as it
commits a block (`PeerNetwork.announce_commit`); `BlockSync` keeps the last one of each peer. A
validator syncs when a peer is two or more blocks ahead, when it has been one block behind for
`sync_lag_grace_s` without committing anything (a missed commit that consensus alone will not
repair), or when the engine asks for it (Raft's `needs_sync` in `status()`). A node that is not a
validator of the set in force (an observer) takes part in no consensus, so it syncs as soon as a
peer is one block ahead: a commit announcement brings it the block within one round trip.

A status is a claim, and a faulty validator may claim any height. A single claim is enough to
*try* fetching from that peer (every block fetched is checked against its certificate), but the
height this node reports as the network's (`sync_target_height`, `blocks_behind`, `syncing` in
`status()`) is one it can trust: the (f + 1)-th highest recent claim among distinct validators
(at least one of any f + 1 is honest; f from the engine's fault model: (n - 1) // 3 under PBFT,
0 under Raft, whose validators are assumed to fail only by crashing, so there one claim counts),
the engine's own hint, or the highest block that arrived with a valid certificate. Peers whose
claims are vouched for are asked first, so that a lone high claim costs no wait while honest peers
can serve; a peer that answers but serves no block at a height it claimed to have is penalized like
one that serves a bad block.

Fetching. A request on the "sync" topic asks a peer for up to `sync_batch_blocks` blocks from a
height; the peer answers as many as fit in one p2p payload, each with its commit certificate:

    b"LSYNC1\\n" + u64 peer head height + u32 count + count * (u32 len + block bytes,
                                                                 u32 len + certificate JSON)

Checking. Block by block, off the event loop (a worker thread): each block decodes structurally,
follows the previous one, is of this chain, and its certificate proves it final under the
validator set in force at its height (`consensus.factory.verify_certificate`). As soon as a run of
whole blocks of at least `signature_job_txs` transactions is decoded, its signatures go to the
signature worker processes (`verify_signatures`, the node's `SignatureChecks`), and each run is
handed to the core once it and every run before it passed, one run after the other (the core must
get them in height order): decoding, signature checks and commits of one batch overlap. The first
block that fails a check (malformed, uncertified, a bad signature) ends the batch: the runs before
it are committed, nothing from it on is handed over. Meanwhile the next batch is already requested
from the same peer (when its answer said it has more), so no round trip is waited for between
batches.
The set of a height is known from committed state up to tip + ACTIVATION_DELAY (`ledger.valset`);
a block above that is checked under the last set known, and the core checks its certificate
again before storing it if, by then, the set in force at its height turned out to be another
(`BlockSync.verified_under`): a chain that skips a validator-set change is refused. Then, in the
runtime loop (`Runtime.apply_synced`), each block is re-executed on the committed head (nonces,
balances, app_hash), stored in one atomic batch and announced to the engine (`ChainAdvanced`).
A peer that serves anything that fails a check is not asked again for `sync_penalty_s` (doubling
per offence) and the next peer is tried; a peer that merely does not answer is just skipped.

Must not import the p2p package: requests go through the `request` function handed in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consensus.api import Ed25519Verifier
from consensus.bft.rounds import max_faulty
from consensus.factory import trusts_validators, verify_certificate
from ledger import keys
from ledger.block import Block, decode_block
from ledger.encoding import canonical_json_trusted
from ledger.errors import Rejected
from node.core import SyncOutcome
from storage import Store

SYNC_TOPIC = "sync"
STATUS_TOPIC = "status"
MAGIC = b"LSYNC1\n"
_HEAD = struct.Struct(">QI")
_LEN = struct.Struct(">I")
# A status older than this many status intervals is not trusted to describe the peer any more.
STATUS_STALE_INTERVALS = 5


class StatusMessage(BaseModel):
    """What a node tells its peers about its head, every `status_interval_s`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    height: int = Field(ge=0)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    from_height: int = Field(ge=1)
    max_blocks: int = Field(ge=1, le=100_000)


class BadBatch(Exception):
    """A peer's answer to a sync request that fails a check; the peer is to blame."""

    def __init__(self, reason: str, height: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.height = height


class RefusedRequest(Exception):
    """A sync request this node will not serve; `code` goes back to the requester."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_status(height: int, block_hash: str) -> bytes:
    return canonical_json_trusted({"hash": block_hash, "height": height})


def decode_status(data: bytes) -> StatusMessage | None:
    try:
        return StatusMessage.model_validate_json(data)
    except ValidationError:
        return None


# --- the serving side -----------------------------------------------------------------------------


def serve_blocks(store: Store, data: bytes, max_blocks: int, max_payload_bytes: int) -> bytes:
    """The answer to a sync request: stored blocks and certificates from the requested height on.

    Raises RefusedRequest for a malformed request or a block that cannot fit in one payload.
    """
    try:
        request = SyncRequest.model_validate_json(data)
    except ValidationError as exc:
        raise RefusedRequest("malformed", f"not a sync request: {exc.error_count()} problem(s)") from None
    tip = store.tip.height
    stop = min(request.from_height + min(request.max_blocks, max_blocks), tip + 1)
    parts: list[bytes] = []
    size = len(MAGIC) + _HEAD.size
    count = 0
    for height, raw in store.load_blocks(request.from_height, stop):
        certificate = store.load_certificate(height)
        if certificate is None:
            break  # cannot happen below the head; serve what came before
        cert = canonical_json_trusted(certificate)
        extra = 2 * _LEN.size + len(raw) + len(cert)
        if size + extra > max_payload_bytes:
            if count == 0:
                raise RefusedRequest("too_large", f"block {height} does not fit in one p2p payload")
            break
        parts += [_LEN.pack(len(raw)), raw, _LEN.pack(len(cert)), cert]
        size += extra
        count += 1
    return b"".join([MAGIC, _HEAD.pack(tip, count), *parts])


# --- the fetching side: checks that need no state (run on a worker thread) -------------------------


def decode_batch(data: bytes, from_height: int, chain_id: str, max_blocks: int
                 ) -> tuple[int, list[tuple[Block, dict[str, Any]]]]:
    """(the peer's head height, [(block, certificate)]) from a sync answer; BadBatch if malformed."""
    peer_tip, raws = split_batch(data, from_height, max_blocks)
    blocks = decode_blocks(raws, from_height, chain_id, None)
    check_peer_tip(peer_tip, from_height, len(blocks))
    return peer_tip, blocks


def split_batch(data: bytes, from_height: int, max_blocks: int) -> tuple[int, list[tuple[bytes, bytes]]]:
    """(the peer's head height, [(block bytes, certificate bytes)]) from a sync answer, its framing
    checked (BadBatch if malformed) and nothing in it decoded yet (`decode_blocks` does that)."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEAD.size:
        raise BadBatch("the answer is not a sync batch")
    peer_tip, count = _HEAD.unpack_from(data, len(MAGIC))
    if count > max_blocks:
        raise BadBatch(f"the answer holds {count} blocks, more than the {max_blocks} asked for")
    offset = len(MAGIC) + _HEAD.size
    out: list[tuple[bytes, bytes]] = []
    for i in range(count):
        raw_block, offset = _take(data, offset, from_height + i)
        raw_cert, offset = _take(data, offset, from_height + i)
        out.append((raw_block, raw_cert))
    if offset != len(data):
        raise BadBatch("trailing bytes after the last block")
    return peer_tip, out


def check_peer_tip(peer_tip: int, from_height: int, count: int) -> None:
    """BadBatch if a peer sent `count` blocks from `from_height` on but names a lower head."""
    if count and peer_tip < from_height + count - 1:
        raise BadBatch("the peer's head is below the blocks it sent")


def decode_blocks(raws: Sequence[tuple[bytes, bytes]], from_height: int, chain_id: str, prev_hash: str | None
                  ) -> list[tuple[Block, dict[str, Any]]]:
    """Blocks `from_height`, `from_height + 1`, ... with their certificates, each structurally sound,
    of this chain and linked to the one before it (the first to `prev_hash`, unless None); BadBatch
    for the first that is not."""
    out: list[tuple[Block, dict[str, Any]]] = []
    for i, (raw_block, raw_cert) in enumerate(raws):
        height = from_height + i
        try:
            decoded = decode_block(raw_block)
        except Rejected as exc:
            raise BadBatch(exc.message, height) from None
        # Rebuilt so that what is stored is the canonical encoding, whatever bytes the peer sent.
        block = Block(decoded.header, decoded.txs)
        header = block.header
        if header.height != height:
            raise BadBatch(f"expected block {height}, got block {header.height}", height)
        if header.chain_id != chain_id:
            raise BadBatch(f"block {height} is for chain {header.chain_id!r}", height)
        if prev_hash is not None and header.prev_hash != prev_hash:
            raise BadBatch(f"block {height} does not link to block {height - 1}", height)
        try:
            certificate = json.loads(raw_cert)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadBatch(f"the certificate of block {height} is not JSON", height) from None
        if not isinstance(certificate, dict):
            raise BadBatch(f"the certificate of block {height} is not an object", height)
        out.append((block, certificate))
        prev_hash = block.hash
    return out


def _take(data: bytes, offset: int, height: int) -> tuple[bytes, int]:
    if offset + _LEN.size > len(data):
        raise BadBatch(f"the answer is cut short at block {height}", height)
    (length,) = _LEN.unpack_from(data, offset)
    start = offset + _LEN.size
    if start + length > len(data):
        raise BadBatch(f"the answer is cut short at block {height}", height)
    return data[start:start + length], start + length


def verify_batch(kind: str, validators: Sequence[str] | Callable[[int], Sequence[str]],
                 blocks: Sequence[tuple[Block, dict[str, Any]]], known_through: int | None = None,
                 *, signatures: bool = True) -> int:
    """Raise BadBatch unless every certificate proves its block final (under `validators`, or the
    set `validators(height)` gives) and, with `signatures`, every transaction signature is valid;
    returns how many blocks passed.

    Above `known_through` the set is only a guess (the last one known): a certificate that fails
    there may be a later set's, so the batch ends before that block instead (it is fetched again
    once the blocks before it are committed and its set is known).

    `signatures=False` leaves the transaction signatures to the caller (`BlockSync` has them
    checked in the signature workers: `signature_items`, `first_invalid`)."""
    verifier = Ed25519Verifier()
    for n, (block, certificate) in enumerate(blocks):
        signers = validators(block.height) if callable(validators) else validators
        if not verify_certificate(kind, block, certificate, signers, verifier):
            if known_through is not None and block.height > known_through:
                return n
            raise BadBatch(f"block {block.height} has an invalid commit certificate", block.height)
        if signatures:
            for index, tx in enumerate(block.txs):
                if not tx.signature_valid():
                    raise BadBatch(f"block {block.height}: transaction {index} has an invalid signature",
                                   block.height)
    return len(blocks)


def signature_items(blocks: Sequence[tuple[Block, dict[str, Any]]]) -> list[tuple[str, bytes, bytes]]:
    """(sender, signature, signed bytes) of every transaction of `blocks`, in order."""
    return [(tx.sender, tx.signature, tx.signing_bytes) for block, _ in blocks for tx in block.txs]


def first_invalid(blocks: Sequence[tuple[Block, dict[str, Any]]], verdicts: Sequence[bool]) -> BadBatch | None:
    """The BadBatch naming the first transaction of `blocks` whose verdict is not True (None: all are)."""
    if len(verdicts) != sum(len(block.txs) for block, _ in blocks):
        raise ValueError("one verdict per transaction")
    position = 0
    for block, _ in blocks:
        for index in range(len(block.txs)):
            if verdicts[position] is not True:
                return BadBatch(f"block {block.height}: transaction {index} has an invalid signature",
                                block.height)
            position += 1
    return None


# --- the syncer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSettings:
    batch_blocks: int = 64
    request_timeout_s: float = 10.0
    lag_grace_s: float = 2.0
    penalty_s: float = 30.0
    penalty_max_s: float = 600.0
    status_interval_s: float = 1.0
    # Transactions per signature job: a fetched batch is cut into runs of whole blocks of at least
    # this many, all checked at once in the signature workers, each run committed once it passed.
    signature_job_txs: int = 512


@dataclass
class PeerHead:
    height: int
    block_hash: str
    seen_at: float  # monotonic seconds


@dataclass
class _Penalty:
    level: int = 0
    until: float = 0.0


Request = Callable[[str, str, bytes, float], Awaitable[bytes]]
Apply = Callable[[Sequence[tuple[Block, dict[str, Any]]]], Awaitable[SyncOutcome]]
RunBlocking = Callable[..., Awaitable[Any]]
# (sender, signature, signed bytes) triples -> one verdict each (the node's signature workers).
VerifySignatures = Callable[[list[tuple[str, bytes, bytes]]], Awaitable[list[bool]]]

COUNTER_NAMES = (
    "status_in", "status_malformed", "requests_served", "requests_refused", "rounds", "requests_failed",
    "batches_fetched", "blocks_applied", "blocks_skipped", "peers_penalized", "claims_not_served",
    "batches_fetched_ahead",
)


class BlockSync:
    """Peer heads, the decision to sync, and the sync itself (one owned task: `run()`)."""

    def __init__(self, *, store: Store, kind: str, validators: Sequence[str], request: Request, apply: Apply,
                 run_blocking: RunBlocking, sync_hint: Callable[[], int | None],
                 max_payload_bytes: Callable[[], int], settings: SyncSettings,
                 on_syncing: Callable[[bool], None], logger: logging.Logger,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 validators_at: Callable[[int], Sequence[str]] | None = None,
                 known_through: Callable[[], int] | None = None,
                 verify_signatures: VerifySignatures | None = None, me: str | None = None) -> None:
        self._store = store
        self._me = me  # this node's id: not in the set in force means it only follows (an observer)
        # Where transaction signatures are checked (default: keys.verify_many on a thread).
        self._verify_signatures = verify_signatures or (lambda items: asyncio.to_thread(keys.verify_many, items))
        # The next batch, requested from the same peer while this one is checked and committed:
        # (peer, from height, the request).
        self._ahead: tuple[str, int, asyncio.Task[bytes]] | None = None
        self._kind = kind
        # The set in force at a height, for heights up to known_through() (default: one set for ever).
        self._validators_at = validators_at or (lambda height: self._validators)
        self._known_through = known_through or (lambda: 2**63 - 1)
        # block hash -> the set its certificate was checked under (the last batch's blocks only).
        self._verified_under: dict[str, tuple[str, ...]] = {}
        self.set_validators(validators)
        self._certified_height = 0  # the highest block fetched with a valid commit certificate
        self._request = request
        self._apply = apply
        self._run_blocking = run_blocking
        self._sync_hint = sync_hint
        self._max_payload_bytes = max_payload_bytes
        self.settings = settings
        self._on_syncing = on_syncing
        self._log = logger
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.heads: dict[str, PeerHead] = {}
        self._penalties: dict[str, _Penalty] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.syncing = False
        self._reported_syncing = False  # what `on_syncing` was last told
        self.target: int | None = None
        self._wakeup = asyncio.Event()
        self._seen_height = store.tip.height
        self._behind_since: float | None = None

    def set_validators(self, validators: Sequence[str]) -> None:
        """The set in force now: whose status claims vouch for a height."""
        self._validators = tuple(validators)
        self._validator_set = frozenset(self._validators)
        # How many distinct validators must report a height before this node takes it as the
        # network's: f + 1 includes an honest one. A crash-fault engine trusts its validators' word.
        self._vouchers = 1 if trusts_validators(self._kind) else max_faulty(len(self._validators)) + 1

    @property
    def following_only(self) -> bool:
        """True when this node is no validator of the set in force: blocks reach it by sync alone."""
        return self._me is not None and self._me not in self._validator_set

    @property
    def _lead_to_sync(self) -> int:
        """How far ahead a peer must be before syncing starts at once: a validator one block behind
        is usually still committing that block by consensus; an observer never is."""
        return 1 if self.following_only else 2

    def verified_under(self, block_hash: str) -> tuple[str, ...] | None:
        """The validator set a synced block's certificate was checked under (None: not by this syncer)."""
        return self._verified_under.get(block_hash)

    # --- inputs ---------------------------------------------------------------------------------

    def on_status(self, peer: str, data: bytes) -> None:
        message = decode_status(data)
        if message is None:
            self.counters["status_malformed"] += 1
            return
        self.counters["status_in"] += 1
        self.heads[peer] = PeerHead(message.height, message.hash, self._clock())
        if message.height >= self._store.tip.height + self._lead_to_sync:
            self._wakeup.set()

    def serve(self, data: bytes) -> bytes:
        try:
            answer = serve_blocks(self._store, data, self.settings.batch_blocks, self._max_payload_bytes())
        except RefusedRequest:
            self.counters["requests_refused"] += 1
            raise
        self.counters["requests_served"] += 1
        return answer

    # --- what /v1/status shows ------------------------------------------------------------------

    def _fresh_heads(self) -> list[tuple[str, PeerHead]]:
        fresh_after = self._clock() - STATUS_STALE_INTERVALS * self.settings.status_interval_s
        return [(peer, head) for peer, head in self.heads.items() if head.seen_at >= fresh_after]

    def claimed_height(self) -> int:
        """The highest head a peer not under penalty reported recently (0 if none): worth trying to
        fetch up to, not to be believed (see `trusted_height`)."""
        return max((head.height for peer, head in self._fresh_heads() if self.penalized_for_s(peer) == 0),
                   default=0)

    def vouched_height(self) -> int:
        """The highest height that f + 1 distinct validators reported recently (0 if fewer reported):
        one of them is honest, so the chain has reached it."""
        heights = sorted((head.height for peer, head in self._fresh_heads() if peer in self._validator_set),
                         reverse=True)
        return heights[self._vouchers - 1] if len(heights) >= self._vouchers else 0

    def trusted_height(self) -> int:
        """The height the network is known to have reached: vouched for by f + 1 validators, proven
        by a block with a valid certificate, or named by this node's own engine."""
        return max(self.vouched_height(), self._certified_height, self._sync_hint() or 0)

    def peer_height(self, peer: str) -> int | None:
        head = self.heads.get(peer)
        return None if head is None else head.height

    def penalized_for_s(self, peer: str) -> float:
        penalty = self._penalties.get(peer)
        return 0.0 if penalty is None else max(0.0, penalty.until - self._clock())

    def status(self) -> dict[str, Any]:
        """`sync_target_height`: the trusted height (`trusted_height`), when above ours;
        `blocks_behind`: how far below it this node is; `syncing`: fetching blocks towards it right
        now. A lone peer's claim shows only as that peer's height, never here."""
        own = self._store.tip.height
        trusted = self.trusted_height()
        behind = max(0, trusted - own)
        return {"syncing": self.syncing and behind > 0, "sync_target_height": trusted if behind else None,
                "blocks_behind": behind}

    # --- the loop -------------------------------------------------------------------------------

    def wanted_target(self) -> int | None:
        """The height to sync to now, or None when consensus can be trusted to catch up alone."""
        now = self._clock()
        own = self._store.tip.height
        if own != self._seen_height:
            self._seen_height = own
            self._behind_since = None
        hint = self._sync_hint()
        target = max(self.claimed_height(), hint or 0)
        if target <= own:
            self._behind_since = None
            return None
        if target >= own + self._lead_to_sync or (hint is not None and hint > own):
            return target
        if self._behind_since is None:
            self._behind_since = now
            return None
        return target if now - self._behind_since >= self.settings.lag_grace_s else None

    async def run(self) -> None:
        check_s = min(self.settings.status_interval_s, self.settings.lag_grace_s) / 2
        while True:
            self._wakeup.clear()
            target = self.wanted_target()
            if target is not None and await self.sync_to(target):
                continue  # progress: look again at once (the others may have moved on meanwhile)
            with suppress(TimeoutError):
                async with asyncio.timeout(check_s):
                    await self._wakeup.wait()

    async def sync_to(self, target: int) -> bool:
        """Fetch and commit blocks until this node reaches `target` (or the best head seen since);
        False when no peer could give anything."""
        self.counters["rounds"] += 1
        self.syncing, self.target = True, target
        self._report_syncing()
        start = self._store.tip.height
        self._log.debug("block sync: at %d, peers at %d", start, target)
        # No signatures: the signature workers start (if they are not running) while the first batch
        # is fetched and decoded, rather than after.
        warm_up = asyncio.ensure_future(self._verify_signatures([]))
        try:
            while True:
                own = self._store.tip.height
                self.target = target = max(target, self.claimed_height(), self._sync_hint() or 0)
                if own >= target:
                    break
                for peer in self._candidates(own):
                    progress = await self._fetch_and_apply(peer, own + 1)
                    self._report_syncing()
                    if progress:
                        break
                else:
                    break
        finally:
            if not warm_up.done():
                warm_up.cancel()
            self._drop_ahead()
            self.syncing = False
            self._report_syncing()
        end = self._store.tip.height
        if end > start:
            self._log.info("block sync: committed blocks %d..%d (peers at %d)", start + 1, end, target)
        return end > start

    def _report_syncing(self) -> None:
        """Tell `on_syncing` (the metrics gauge) what `status()` says, when that changes."""
        syncing = self.syncing and self.trusted_height() > self._store.tip.height
        if syncing != self._reported_syncing:
            self._reported_syncing = syncing
            self._on_syncing(syncing)

    def _candidates(self, own: int) -> list[str]:
        """Peers ahead of `own`, not under penalty: those whose claim is vouched for first (a lone
        high claim may be a lie, and a liar that never answers would be waited for every round),
        then the highest claim first, ties in random order."""
        trusted = self.trusted_height()
        peers = [(head.height <= trusted, head.height, self._rng.random(), peer) for peer, head in self.heads.items()
                 if head.height > own and self.penalized_for_s(peer) == 0]
        return [peer for *_, peer in sorted(peers, reverse=True)]

    async def _fetch_and_apply(self, peer: str, from_height: int) -> bool:
        """One batch from `peer`: fetched (or taken from the request made ahead), then decoded and
        certified block by block, its signatures checked run by run in the workers and the runs
        that passed committed, all three at once (`_check_and_apply`); the next batch is requested
        meanwhile. Nothing after a block that fails a check is handed to the core."""
        head = self.heads.get(peer)
        claimed = head.height if head is not None else 0
        try:
            answer = await self._answer(peer, from_height)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport's typed failures: no answer is no fault
            self.counters["requests_failed"] += 1
            self._log.debug("block sync: %s… did not answer: %s", peer[:16], exc)
            return False
        # Sets are read here, on the loop, where the store is consistent; the check runs off it.
        known = self._known_through()
        last_known = tuple(self._validators_at(known)) if known < from_height + self.settings.batch_blocks else ()
        sets = {h: tuple(self._validators_at(h)) if h <= known else last_known
                for h in range(from_height, from_height + self.settings.batch_blocks)}
        try:
            peer_tip, raws = split_batch(answer, from_height, self.settings.batch_blocks)
            check_peer_tip(peer_tip, from_height, len(raws))
        except BadBatch as exc:
            self.penalize(peer, exc.reason)
            return False
        self.counters["batches_fetched"] += 1
        head = self.heads.get(peer)
        if head is not None:
            head.height = peer_tip  # its answer is fresher than its last status
        if raws and peer_tip >= from_height + len(raws):
            self._ask_ahead(peer, from_height + len(raws))
        self._verified_under = {}
        bad, certified = await self._check_and_apply(raws, from_height, sets, known)
        if bad is not None:
            self._drop_ahead()
            self.penalize(peer, bad.reason)
        elif certified == 0 and claimed >= from_height:
            # An honest peer at `claimed` serves at least block `from_height`; one that does not
            # claimed a height it does not have.
            self.counters["claims_not_served"] += 1
            self.penalize(peer, f"it claimed height {claimed} but served no block from {from_height}")
        return self._store.tip.height >= from_height

    async def _check_and_apply(self, raws: Sequence[tuple[bytes, bytes]], from_height: int,
                               sets: dict[int, tuple[str, ...]], known: int) -> tuple[BadBatch | None, int]:
        """Decode and certify the batch block by block on a worker thread, send the signatures of
        each run of blocks to the workers as soon as it is decoded, and hand the runs to the core one
        after the other, each once it passed and the one before it is committed (the core must get
        them in order: it works through a run a block per turn). Answers the first failure (a
        malformed block or certificate, a bad signature, a block the core refused; nothing after it
        is handed over) and how many blocks passed the certificate check."""
        # A run and its signature check; then None (the end), or the exception decoding ended with.
        runs: asyncio.Queue[tuple[list[tuple[Block, dict[str, Any]]], asyncio.Future[list[bool]]] | Exception | None]
        runs = asyncio.Queue()
        checks: list[asyncio.Future[list[bool]]] = []
        certified = 0

        def send(run: list[tuple[Block, dict[str, Any]]]) -> None:
            check = asyncio.ensure_future(self._verify_signatures(signature_items(run)))
            checks.append(check)
            runs.put_nowait((run, check))

        async def decode() -> None:
            nonlocal certified
            prev_hash: str | None = None
            run: list[tuple[Block, dict[str, Any]]] = []
            count = 0
            try:
                for i, raw in enumerate(raws):
                    passed = await self._run_blocking(self._certify, raw, from_height + i, prev_hash, sets, known)
                    if not passed:
                        break  # a later validator set's certificate, maybe: fetched again once it is known
                    block = passed[0][0]
                    self._verified_under[block.hash] = sets[block.height]
                    certified += 1
                    prev_hash = block.hash
                    run.append(passed[0])
                    count += len(block.txs)
                    if count >= self.settings.signature_job_txs:
                        send(run)
                        run, count = [], 0
                if run:
                    send(run)
                runs.put_nowait(None)
            except Exception as exc:  # a BadBatch is the peer's; anything else ends the sync task below
                if run and isinstance(exc, BadBatch):
                    send(run)  # the blocks before the bad one are sound: checked and committed
                runs.put_nowait(exc)

        decoder = asyncio.ensure_future(decode())
        try:
            while (item := await runs.get()) is not None:
                if isinstance(item, BadBatch):
                    return item, certified
                if isinstance(item, Exception):
                    raise item
                run, check = item
                bad = first_invalid(run, await check)
                if bad is not None:
                    return bad, certified
                self._certified_height = max(self._certified_height, run[-1][0].height)
                outcome = await self._apply(run)
                self.counters["blocks_applied"] += outcome.applied
                self.counters["blocks_skipped"] += outcome.skipped
                if outcome.error is not None:
                    # No height: the node is stopping, which is no peer's fault.
                    bad = None if outcome.error_height is None else BadBatch(outcome.error, outcome.error_height)
                    return bad, certified
            return None, certified
        finally:
            decoder.cancel()
            for check in checks:
                check.cancel()

    async def _answer(self, peer: str, from_height: int) -> bytes:
        """The peer's answer for `from_height`: the request made ahead if it is that one, else a new one."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[:2] == (peer, from_height):
                self.counters["batches_fetched_ahead"] += 1
                return await ahead[2]
            ahead[2].cancel()
        request = SyncRequest(from_height=from_height, max_blocks=self.settings.batch_blocks)
        return await self._request(peer, SYNC_TOPIC, request.model_dump_json().encode(),
                                   self.settings.request_timeout_s)

    def _ask_ahead(self, peer: str, from_height: int) -> None:
        self._drop_ahead()
        request = SyncRequest(from_height=from_height, max_blocks=self.settings.batch_blocks)
        task = asyncio.ensure_future(self._request(peer, SYNC_TOPIC, request.model_dump_json().encode(),
                                                   self.settings.request_timeout_s))
        # Its failure, if nobody takes it, is nobody's concern: retrieve it so asyncio does not log it.
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        self._ahead = (peer, from_height, task)

    def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[2].cancel()

    def _certify(self, raw: tuple[bytes, bytes], height: int, prev_hash: str | None,
                 sets: dict[int, tuple[str, ...]], known: int) -> list[tuple[Block, dict[str, Any]]]:
        """Block `height` decoded and its certificate checked ([] when it may be a later set's);
        its signatures are `_check_and_apply`'s."""
        blocks = decode_blocks([raw], height, self._store.chain_id, prev_hash)
        passed = verify_batch(self._kind, sets.__getitem__, blocks, known, signatures=False)
        return blocks[:passed]

    def penalize(self, peer: str, reason: str) -> None:
        penalty = self._penalties.setdefault(peer, _Penalty())
        penalty.level += 1
        duration = min(self.settings.penalty_max_s, self.settings.penalty_s * 2 ** (penalty.level - 1))
        penalty.until = self._clock() + duration
        self.counters["peers_penalized"] += 1
        self._log.warning("block sync: not asking peer %s… again for %.0fs: %s", peer[:16], duration, reason)
