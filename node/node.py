"""`Node`: the composition root of one ledgerd node, and its `NodeService` for the HTTP layer.

    node = Node.open(home, overrides)   # config, genesis, key, database, engine: ConfigError or
                                        # StorageError (one clear line) on any problem
    await node.start()                  # p2p listener and peers (if any), then the runtime task
    ...                                 # node.submit / tx_status / block / events ... (NodeService)
    await node.stop()                   # stop accepting, stop p2p, stop the runtime, wake waiters,
                                        # close the DB

A node halts by itself on a fatal error (a failed durable write, a committed block it cannot
execute): `await node.wait_stopped()` returns then, and `node.fatal_error` says why.

The HTTP layer never reaches the engine or the database through anything but these methods:
submissions go through the runtime's inbox; reads (blocks, accounts, records, tx status) read
committed data from the store on the event loop thread, where every commit is applied atomically.

Peers: on a chain with more than one validator the node owns a `node.cluster.PeerNetwork` (its
p2p listener on `p2p_host:p2p_port`, a link to every peer in `[peers]`, tx gossip, peer heads and
block sync), started first by `start()` and stopped before the runtime by `stop()`. Tests may plug
in a transport of their own instead with `set_transport(transport, tx_gossip)`: the runtime sends
engine messages through `transport`; accepted submissions are gossiped through `tx_gossip` as a
JSON array of transactions; received engine messages go to `deliver` and gossiped transactions to
`receive_txs`. Transactions received by gossip are never gossiped again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from consensus.api import Ed25519Signer, Ed25519Verifier, Engine, EngineConfig, EngineContext
from consensus.factory import history_blocks, make_engine, trusts_validators
from ledger import keys
from ledger.block import Block, BlockHeader, decode_block_header
from ledger.errors import Rejected
from ledger.genesis import Genesis
from ledger.state import account_key, decode_account, record_key
from ledger.tx import Transaction, decode_canonical_array, decode_tx
from node.cluster import PeerNetwork
from node.config import ConfigError, NodeConfig, load_config
from node.executor import BlockExecutor, BuildLimits
from node.gossip import TxBatcher
from node.mempool import Dropped, Mempool, MempoolLimits
from node.metrics import NodeMetrics
from node.runtime import CommittedBlock, Runtime, SyncOutcome, Transport
from node.service import SubmitOutcome, TxStatus
from node.sigworkers import SignatureWorkers, WorkerLost
from storage import StorageError, Store

STARTUP_ERRORS = (ConfigError, StorageError)
VERIFY_THREADS = 2
VERIFY_CHUNK = 64  # transactions per worker job; below this a batch is verified in one job
GOSSIP_BATCHES_PER_ROUND = 64  # queued gossip batches admitted together in one round
VERIFY_INLINE_BELOW = 32  # fewer signatures than this are checked on the loop (see _verify)


class TxGossip(Protocol):
    """Where accepted transactions are gossiped (a `p2p.TopicChannel` for the "txs" topic)."""

    def broadcast(self, data: bytes) -> None | int: ...


class _Subscriber:
    __slots__ = ("events", "wakeup", "lagged", "closed")

    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque()
        self.wakeup = asyncio.Event()
        self.lagged = False
        self.closed = False


def _status_of(tx_hash: str, height: int, index: int, receipt: Mapping[str, Any]) -> TxStatus:
    status = "committed" if receipt.get("code") == "ok" else "failed"
    return TxStatus(tx_hash, status, height, index, dict(receipt))


def recent_proposers(store: Store, count: int) -> list[str]:
    """`header.proposer` of the last `count` committed blocks, oldest first: what the engine's
    proposer schedule reads, so that a restarted node computes the schedule every other node does."""
    tip = store.tip.height
    proposers = []
    for height, raw in store.load_blocks(tip - count + 1, tip + 1):
        try:
            proposers.append(decode_block_header(raw).proposer)
        except Rejected as exc:
            raise StorageError(f"the database at {store.path} is corrupt: block {height}: {exc.message}") from exc
    return proposers


class Node:
    """One ledgerd node. Build with `Node.open`; many may run in one process."""

    def __init__(self, config: NodeConfig, genesis: Genesis, key: keys.PrivateKey, store: Store,
                 metrics: NodeMetrics, logger: logging.Logger,
                 engine_factory: Callable[[str, EngineContext], Engine]) -> None:
        self.config = config
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.node_id = key.address
        self.metrics = metrics
        self.store = store
        self.log = logger
        self.mempool = Mempool(store, genesis.chain_id, MempoolLimits(
            max_txs=config.mempool_max_txs, max_bytes=config.mempool_max_bytes,
            max_future_per_sender=config.mempool_max_future_per_sender, tx_ttl_s=config.mempool_tx_ttl_s,
            retry_after_s=config.mempool_retry_after_s, dropped_memory=config.dropped_tx_memory,
        ), time.monotonic)
        self.executor = BlockExecutor(
            store, self.mempool, key.address, genesis.validator_ids,
            BuildLimits(config.max_block_txs, config.max_block_bytes, config.max_block_time_drift_ms,
                        empty_block_after_round_0=genesis.consensus == "pbft"),
            lambda: int(time.time() * 1000),
        )
        context = EngineContext(
            chain_id=genesis.chain_id, validators=genesis.validator_ids, signer=Ed25519Signer(key),
            verifier=Ed25519Verifier(), checker=self.executor, tip=store.tip,
            rng=random.Random(int.from_bytes(os.urandom(16), "big")), restored=store.load_engine(),
            config=EngineConfig(),
            recent_proposers=recent_proposers(store, history_blocks(genesis.consensus, len(genesis.validator_ids))),
        )
        self.engine = engine_factory(genesis.consensus, context)
        # Raft assumes crash faults only: a transaction a peer gossips was verified by the validator
        # that took it from a client, and is not verified again here (see consensus.factory).
        self._trust_peers = trusts_validators(genesis.consensus)
        metrics.watch_engine(lambda: dict(self.engine.counters))
        self.runtime = Runtime(
            self.engine, store, self.executor, self.mempool, metrics, tick_ms=config.tick_ms,
            block_interval_ms=config.block_interval_ms, full_block_txs=config.max_block_txs,
            max_inbox=config.runtime_max_inbox, on_commit=self._on_commit, on_dropped=self._on_dropped,
            logger=logger,
        )
        self.fatal_error: str | None = None
        self._tx_out: TxBatcher | None = None
        self._connected_peers: Callable[[], Sequence[str]] | None = None
        self._state = "new"
        self._task: asyncio.Task[None] | None = None
        self._gossip_task: asyncio.Task[None] | None = None
        self._regossip_task: asyncio.Task[None] | None = None
        self._gossip_in: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(config.gossip_inbox_batches)
        self._stopped = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[TxStatus | None]]] = {}
        self._subscribers: set[_Subscriber] = set()
        self._verify_pool: ThreadPoolExecutor | None = None  # block sync checks; signatures without workers
        self.signers: SignatureWorkers | None = None  # signature worker processes (verify_processes > 0)
        self.network: PeerNetwork | None = None
        if len(genesis.validator_ids) > 1:
            self.network = PeerNetwork(
                config=config, key=key, genesis=genesis, store=store, metrics=metrics, logger=logger,
                deliver=self.deliver, receive_txs=self.receive_txs, apply_synced=self._apply_synced,
                run_blocking=self._run_blocking, sync_hint=self._sync_hint,
            )
        metrics.height.set(store.tip.height)

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(cls, home: Path, overrides: Mapping[str, Any] | None = None, *,
             environ: Mapping[str, str] | None = None, metrics: NodeMetrics | None = None,
             engine_factory: Callable[[str, EngineContext], Engine] | None = None) -> Node:
        """Load config, genesis and key from `home`, open the database and build the engine.

        Raises ConfigError or StorageError (both one clear line) instead of a traceback.
        """
        config = load_config(Path(home), overrides, environ)
        try:
            genesis = Genesis.load(config.path("genesis_file"))
        except Rejected as exc:
            raise ConfigError(exc.message) from None
        if config.consensus is not None and config.consensus != genesis.consensus:
            raise ConfigError(f"this node is configured for {config.consensus} but the genesis file says "
                              f"{genesis.consensus}; the genesis decides, fix `consensus` in the config")
        try:
            key = keys.PrivateKey.load(config.path("node_key_file"))
        except Rejected as exc:
            raise ConfigError(exc.message) from None
        if key.address not in genesis.validator_ids:
            raise ConfigError(f"this node's key ({key.address[:16]}…, {config.path('node_key_file')}) is "
                              "not a validator in the genesis file")
        store = Store.open(config.path("data_dir"), genesis)
        try:
            return cls(config, genesis, key, store, metrics or NodeMetrics(),
                       logging.getLogger("ledgerd.node"), engine_factory or make_engine)
        except ValueError as exc:
            store.close()
            raise ConfigError(f"cannot run the {genesis.consensus} engine: {exc}") from None
        except BaseException:
            store.close()
            raise

    @property
    def service(self) -> Node:
        """What the HTTP layer is given: this node (it implements `node.service.NodeService`)."""
        return self

    @property
    def height(self) -> int:
        return self.store.tip.height

    @property
    def running(self) -> bool:
        return self._state == "running"

    def set_transport(self, transport: Transport | None, tx_gossip: TxGossip | None = None,
                      connected_peers: Callable[[], Sequence[str]] | None = None) -> None:
        """Plug in a transport of one's own (engine messages, tx gossip, who is connected for
        /v1/status); `start()` does this itself with the node's PeerNetwork."""
        self.runtime.transport = transport
        self._tx_out = None if tx_gossip is None else TxBatcher(
            tx_gossip.broadcast, max_batch_txs=self.config.max_batch_txs, max_batch_bytes=1 << 62,
            max_pending_txs=self.config.gossip_max_pending_txs, flush_s=0,
            on_overflow=lambda n: self.metrics.dropped.labels("tx_gossip_overflow").inc(n))
        self._connected_peers = connected_peers

    async def start(self) -> None:
        """Start the p2p network (ConfigError if its port cannot be bound), then the runtime."""
        if self._state != "new":
            raise RuntimeError(f"Node.start() called in state {self._state!r}")
        self._verify_pool = ThreadPoolExecutor(VERIFY_THREADS, f"verify-{self.node_id[:8]}")
        if self.config.verify_processes > 0:
            self.signers = SignatureWorkers(self.config.verify_processes)
        if self.network is not None:
            await self.network.start()
            self.runtime.transport = self.network.consensus
            self._tx_out = self.network.gossip
            self._connected_peers = self.network.connected_peers
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name=f"runtime-{self.node_id[:8]}")
        self._gossip_task = asyncio.create_task(self._gossip_intake(), name=f"tx-gossip-{self.node_id[:8]}")
        self._regossip_task = asyncio.create_task(self._regossip(), name=f"tx-regossip-{self.node_id[:8]}")
        self.log.info("node started", extra={"fields": {
            "chain_id": self.chain_id, "height": self.height, "consensus": self.genesis.consensus}})

    async def _run(self) -> None:
        try:
            await self.runtime.run()
        except asyncio.CancelledError:
            raise
        except StorageError as exc:
            self._halt(f"storage failure: {exc}")
        except Rejected as exc:
            self._halt(f"cannot apply a committed block: {exc.message}")
        except Exception as exc:
            self.log.exception("the consensus runtime failed")
            self._halt(f"internal error in the consensus runtime: {type(exc).__name__}: {exc}")
        finally:
            self._end_streams()
            self._release_waiters()
            self._stopped.set()

    def _halt(self, reason: str) -> None:
        self.fatal_error = reason
        self._state = "halted"
        self.log.critical("node halted: %s", reason)

    async def wait_stopped(self) -> None:
        """Returns once the runtime has ended: after `stop()`, or when the node halted by itself."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, stop the runtime after its current event, wake waiters, close the DB."""
        if self._state == "stopped":
            return
        if self._state != "halted":
            self._state = "stopping"
        for task in (self._gossip_task, self._regossip_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.network is not None:
            await self.network.stop()
        self.runtime.request_stop()
        if self._task is not None:
            await self._task
        self._end_streams()
        self._release_waiters()
        if self.signers is not None:
            await self.signers.close()
        if self._verify_pool is not None:
            self._verify_pool.shutdown(wait=True)
        self.store.close()
        self._state = "stopped"
        self._stopped.set()
        self.log.info("node stopped", extra={"fields": {"height": self.store.tip.height}})

    # --- NodeService: writes ----------------------------------------------------------------

    async def submit(self, txs: list[Any]) -> list[SubmitOutcome]:
        """Decode, verify (on worker threads), admit through the runtime, gossip what was accepted."""
        outcomes: list[SubmitOutcome | None] = [None] * len(txs)
        decoded: list[Transaction] = []
        positions: list[int] = []
        for i, raw in enumerate(txs):
            if isinstance(raw, Transaction):
                tx = raw
            else:
                try:
                    tx = decode_tx(raw)
                except Rejected as exc:
                    outcomes[i] = SubmitOutcome(None, exc.code, exc.message)
                    continue
            decoded.append(tx)
            positions.append(i)
        if decoded:
            admitted = await self._admit(decoded)
            to_gossip: dict[str, Transaction] = {}
            for i, tx, outcome in zip(positions, decoded, admitted, strict=True):
                outcomes[i] = outcome
                # A client resubmitting a transaction that is still pending here sends it out
                # again: a peer that restarted (or missed it) gets it, and the client's retries,
                # not a timer, bound how often that happens.
                if outcome.accepted or (outcome.code == "duplicate" and tx.hash in self.mempool):
                    to_gossip.setdefault(tx.hash, tx)
            if to_gossip and self._tx_out is not None:
                self._tx_out.add(list(to_gossip.values()))
        final = [o for o in outcomes if o is not None]
        for outcome in final:
            if not outcome.accepted:
                self.metrics.txs_rejected.labels(outcome.code).inc()
        return final

    def receive_txs(self, peer: str, data: bytes) -> bool:
        """Queue transactions gossiped by `peer` (a JSON array) for admission; returns at once.

        False (and counted) when the node is not running or its gossip intake is full: gossip is
        best effort, and a peer flooding us must not grow our memory.
        """
        if self._state != "running" or self._gossip_in.full():
            self.metrics.dropped.labels("tx_gossip_full" if self._state == "running" else "stopping").inc()
            return False
        self._gossip_in.put_nowait((peer, data))
        return True

    async def _gossip_intake(self) -> None:
        """The owned task that admits gossiped transactions.

        Every batch already queued is taken together into one admission round (one verification
        fan-out, one trip through the runtime): taking them one by one, a burst from several peers
        outran the intake, the queue overflowed and a Raft leader lost transactions it then never
        proposed. Each round also re-gossips transactions that have waited here too long.
        """
        while True:
            batches = [await self._gossip_in.get()]
            while not self._gossip_in.empty() and len(batches) < GOSSIP_BATCHES_PER_ROUND:
                batches.append(self._gossip_in.get_nowait())
            decoded = []
            for _peer, data in batches:
                fast = decode_canonical_array(data)
                if fast is not None:
                    if len(fast) <= self.config.max_batch_txs:
                        decoded.extend(fast)
                    else:
                        self.metrics.dropped.labels("malformed_tx_gossip").inc()
                    continue
                try:
                    items = json.loads(data)
                except ValueError:
                    items = None
                if not isinstance(items, list) or len(items) > self.config.max_batch_txs:
                    self.metrics.dropped.labels("malformed_tx_gossip").inc()
                    continue
                for raw in items:
                    try:
                        decoded.append(decode_tx(raw))
                    except Rejected:
                        self.metrics.dropped.labels("malformed_tx_gossip").inc()
            if decoded:
                await self._admit(decoded, trusted=self._trust_peers)

    async def _regossip(self) -> None:
        """The owned task that sends out again what has been pending here for a while.

        Gossip is best effort (a peer's intake may be full, a link may drop), and a transaction
        only this node holds would wait for this node to propose: under Raft, forever on a
        follower. Every `gossip_resend_after_s`, pending transactions at least that old and not
        sent that recently go out again (at most `max_batch_txs` per peer round, oldest first);
        a peer that has them answers `duplicate` at the cost of a dictionary lookup.
        """
        period = self.config.gossip_resend_after_s
        while True:
            await asyncio.sleep(period)
            if self._tx_out is None or self._state != "running":
                continue
            stale = self.mempool.take_stale(period, self.config.max_batch_txs)
            if stale:
                self.metrics.txs_regossiped.inc(len(stale))
                self._tx_out.add(stale)

    def deliver(self, peer: str, data: bytes) -> bool:
        """An engine message from an authenticated peer; False when it was dropped (inbox full)."""
        return self.runtime.post_received(peer, data)

    async def _apply_synced(self, blocks: Sequence[tuple[Block, dict[str, Any]]]) -> SyncOutcome:
        if self._state != "running":
            return SyncOutcome(0, 0, "the node is not running")
        return await self.runtime.apply_synced(blocks)

    async def _run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """CPU-heavy checks (block sync) on the worker threads, off the event loop."""
        if self._verify_pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._verify_pool, fn, *args)

    def _sync_hint(self) -> int | None:
        """A height the engine itself says it can only reach by block sync (Raft's needs_sync)."""
        hint = self.engine.status().get("needs_sync")
        return hint if type(hint) is int else None

    async def _admit(self, txs: list[Transaction], trusted: bool = False) -> list[SubmitOutcome]:
        """`trusted`: gossiped by a validator under a crash-fault engine, which verified them."""
        if self._state != "running":
            reason = self.fatal_error or "the node is not running"
            return [SubmitOutcome(tx.hash, "shutting_down", reason) for tx in txs]
        verified: list[bool | None] | None = [True] * len(txs) if trusted else await self._verify(txs)
        return await self.runtime.submit(txs, verified)

    async def _verify(self, txs: list[Transaction]) -> list[bool | None] | None:
        """Check signatures in the worker processes (or threads), skipping known ones.

        Answers one verdict per transaction: True/False when checked here or known, None when the
        check was skipped because admission refuses the transaction by its nonce first (it then
        verifies it itself if, after all, it gets that far). None overall before `start()`:
        admission then verifies on the loop itself.
        """
        if self._verify_pool is None:
            return None
        mempool = self.mempool
        verdicts: list[bool | None] = []
        todo: list[int] = []
        for i, tx in enumerate(txs):
            if mempool.is_verified(tx):
                verdicts.append(True)
            elif mempool.is_stale(tx):  # typically gossip of a transaction a block already brought
                verdicts.append(None)
            else:
                verdicts.append(False)
                todo.append(i)
        # A handoff to a worker process costs 0.15-0.45 ms of this process's CPU and ~0.25 ms of
        # the worker's (a pipe round trip alone is ~0.16 ms on the benchmark VM) against ~0.07 ms
        # a check: small jobs are cheaper here; large ones are worth freeing the event loop for.
        if len(todo) < VERIFY_INLINE_BELOW:
            for i in todo:
                verdicts[i] = txs[i].signature_valid()
            return verdicts
        workers = self.signers.count if self.signers is not None else VERIFY_THREADS
        chunk = max(VERIFY_CHUNK, -(-len(todo) // workers))
        jobs = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
        answers = await asyncio.gather(*(self._verify_job([(txs[i].sender, txs[i].signature, txs[i].signing_bytes)
                                                           for i in job]) for job in jobs))
        for job, results in zip(jobs, answers, strict=True):
            for i, ok in zip(job, results, strict=True):
                verdicts[i] = ok
        return verdicts

    async def _verify_job(self, items: list[tuple[str, bytes, bytes]]) -> list[bool]:
        if self.signers is None:
            assert self._verify_pool is not None
            return await asyncio.get_running_loop().run_in_executor(self._verify_pool, keys.verify_many, items)
        try:
            return await self.signers.verify(items)
        except WorkerLost as exc:
            # Correctness does not depend on the workers: check here, and let the next job restart one.
            self.metrics.dropped.labels("signature_worker_lost").inc()
            self.log.warning("a signature worker failed (%s); verifying %d signatures on the node", exc, len(items))
            return keys.verify_many(items)

    async def wait_committed(self, tx_hash: str, timeout_s: float) -> TxStatus | None:
        status = self.tx_status(tx_hash)
        if status is not None and status.status != "pending":
            return status
        if self._state != "running":
            return None
        future: asyncio.Future[TxStatus | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_hash, []).append(future)
        try:
            async with asyncio.timeout(timeout_s):
                return await future  # None when the node stops meanwhile
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(tx_hash)
            if waiters is not None:
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[tx_hash]

    # --- NodeService: reads -----------------------------------------------------------------

    def tx_status(self, tx_hash: str) -> TxStatus | None:
        found = self.store.load_tx(tx_hash)
        if found is not None:
            return _status_of(tx_hash, *found)
        if tx_hash in self.mempool:
            return TxStatus(tx_hash, "pending")
        dropped = self.mempool.dropped(tx_hash)
        if dropped is not None:
            return TxStatus(tx_hash, "failed", result={"code": dropped.code, "message": dropped.message})
        return None

    def block(self, height: int | None) -> dict[str, Any] | None:
        tip = self.store.tip.height
        if height is None:
            height = tip
        if not 1 <= height <= tip:
            return None
        block, hashes, receipts = self._load_stored(height)
        block_hash = hashes[0]
        header = block["header"]
        header["hash"] = block_hash
        return {
            "height": height,
            "hash": block_hash,
            "header": header,
            "txs": block["txs"],
            "receipts": [{"hash": h, **r} for h, r in zip(hashes[1:], receipts, strict=True)],
            "certificate": self.store.load_certificate(height),
        }

    def _load_stored(self, height: int) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
        """(block JSON, [block hash, tx hashes...], receipts) as stored; nothing is re-decoded."""
        block = self.store.load_block_json(height)
        tx_hashes = self.store.load_tx_hashes(height)
        receipts = self.store.load_receipts(height)
        if block is None or tx_hashes is None or receipts is None:
            raise StorageError(f"block {height} is missing below the head {self.store.tip.height}")
        block_hash = BlockHeader(**block["header"]).hash()
        return block, [block_hash, *tx_hashes], receipts

    def account(self, address: str) -> dict[str, Any]:
        if not keys.is_address(address):
            raise Rejected("invalid_address", "an address is 64 lowercase hex characters")
        account = decode_account(self.store.state.get(account_key(address)))
        return {"address": address, "nonce": account.nonce, "balances": dict(account.balances)}

    def record(self, owner: str, key: str) -> dict[str, Any] | None:
        if not keys.is_address(owner):
            raise Rejected("invalid_address", "a record owner is 64 lowercase hex characters")
        try:
            raw = self.store.state.get(record_key(owner, key))
        except UnicodeEncodeError:
            raise Rejected("invalid_record_key", "the record key is not valid Unicode") from None
        if raw is None:
            return None
        stored = json.loads(raw)
        return {"owner": owner, "key": key, "value": stored["value"], "height": stored["height"],
                "tx": stored["tx"]}

    def status(self) -> dict[str, Any]:
        tip = self.store.tip
        connected = set(self._connected_peers()) if self._connected_peers is not None else set()
        names = {v.node_id: v.name for v in self.genesis.validators}
        network = self.network
        sync = network.sync.status() if network is not None else \
            {"syncing": False, "sync_target_height": None, "blocks_behind": 0}
        if network is not None:
            self.metrics.peers.set(network.connected_validators())
        return {
            "node_id": self.node_id,
            "name": names.get(self.node_id),
            "chain_id": self.chain_id,
            "genesis_hash": self.store.genesis_hash,
            "consensus": self.genesis.consensus,
            "state": self._state,
            "fatal_error": self.fatal_error,
            "height": tip.height,
            "latest_hash": tip.block_hash,
            "latest_timestamp": tip.timestamp,
            "app_hash": tip.app_hash,
            "validators": [{"node_id": v.node_id, "name": v.name} for v in self.genesis.validators],
            "peers": [{"node_id": peer, "name": names.get(peer), "url": url, "connected": peer in connected,
                       "height": network.sync.peer_height(peer) if network is not None else None}
                      for peer, url in self.config.peers.items()],
            "p2p_url": network.url if network is not None else None,
            **sync,
            "mempool_size": len(self.mempool),
            "mempool_bytes": self.mempool.size_bytes,
            "engine": self.engine.status(),
        }

    # --- events -----------------------------------------------------------------------------

    async def events(self, from_height: int | None) -> AsyncIterator[dict[str, Any]]:
        """Committed blocks in order from `from_height` (default: the next one), without gaps.

        Replays stored blocks first, then follows commits live. A subscriber that falls more than
        `ws_buffer_blocks` behind gets one {"type": "error", "code": "subscriber_too_slow"} event
        and the stream ends; it can resume with from_height. The stream ends when the node stops.
        """
        next_height = self.store.tip.height + 1 if from_height is None else max(from_height, 1)
        while next_height <= self.store.tip.height:
            if self.store.closed:
                return
            yield self._stored_event(next_height)
            next_height += 1
        if self._state not in ("new", "running"):
            return
        # Caught up; no await since the check above, so no commit can slip in between.
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            while True:
                while not sub.events:
                    if sub.lagged:
                        yield {"type": "error", "code": "subscriber_too_slow",
                               "message": f"this stream fell more than {self.config.ws_buffer_blocks} blocks "
                                          f"behind; reconnect with from_height={next_height}"}
                        return
                    if sub.closed:
                        return
                    sub.wakeup.clear()
                    await sub.wakeup.wait()
                event = sub.events.popleft()
                if event["height"] < next_height:
                    continue  # from_height was in the future
                if event["height"] != next_height:
                    raise RuntimeError(f"event stream gap: expected {next_height}, got {event['height']}")
                yield event
                next_height += 1
        finally:
            self._subscribers.discard(sub)

    def _stored_event(self, height: int) -> dict[str, Any]:
        block, hashes, receipts = self._load_stored(height)
        txs = [(h, tx["body"]) for h, tx in zip(hashes[1:], block["txs"], strict=True)]
        return _block_event(hashes[0], block["header"], txs, receipts)

    def _on_commit(self, committed: CommittedBlock) -> None:
        block = committed.block
        receipts = [r.to_json() for r in committed.receipts]
        for index, (tx, receipt) in enumerate(zip(block.txs, receipts, strict=True)):
            futures = self._waiters.pop(tx.hash, None)
            if futures:
                status = _status_of(tx.hash, block.height, index, receipt)
                for future in futures:
                    if not future.done():
                        future.set_result(status)
        self._on_dropped(committed.dropped)
        if self._subscribers:
            event = _block_event(block.hash, block.header.to_json(),
                                 [(tx.hash, tx.body()) for tx in block.txs], receipts)
            for sub in self._subscribers:
                if sub.lagged:
                    continue
                if len(sub.events) >= self.config.ws_buffer_blocks:
                    sub.lagged = True
                    sub.events.clear()
                else:
                    sub.events.append(event)
                sub.wakeup.set()

    def _on_dropped(self, dropped: Sequence[Dropped]) -> None:
        for d in dropped:
            futures = self._waiters.pop(d.hash, None)
            if futures:
                status = TxStatus(d.hash, "failed", result={"code": d.code, "message": d.message})
                for future in futures:
                    if not future.done():
                        future.set_result(status)

    def _release_waiters(self) -> None:
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()

    def _end_streams(self) -> None:
        for sub in self._subscribers:
            sub.closed = True
            sub.wakeup.set()


def _block_event(block_hash: str, header: Mapping[str, Any], txs: Sequence[tuple[str, Mapping[str, Any]]],
                 receipts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One /v1/events message: the header and, per transaction (hash, body), its result."""
    return {
        "type": "block",
        "height": header["height"],
        "hash": block_hash,
        "header": {**header, "hash": block_hash},
        "txs": [
            {"hash": tx_hash, "index": i, "sender": body["sender"], "nonce": body["nonce"],
             "type": body["type"], "status": "committed" if r.get("code") == "ok" else "failed",
             "result": dict(r)}
            for i, ((tx_hash, body), r) in enumerate(zip(txs, receipts, strict=True))
        ],
    }
