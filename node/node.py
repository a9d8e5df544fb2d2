"""`Node`: the composition root of one ledgerd node: it builds every part, wires them together,
and starts and stops them in order.

    node = Node.open(home, overrides)   # config, genesis, key, database, engine: ConfigError or
                                        # StorageError (one clear line) on any problem
    await node.start()                  # p2p listener and peers (if any), then the runtime task
    ...                                 # node.service: what the HTTP layer is given (NodeService)
    await node.stop()                   # stop accepting, stop p2p, stop the runtime, wake waiters,
                                        # close the DB: every part, even when one of them fails

The parts: `NodeCore` (node.core, the decisions) driven by `Runtime` (node.runtime); `TxIntake`
(node.intake: submissions and gossip in); `ChainReads` (node.reads) and `CommitFeed` (node.feed:
waiters and event streams), which together with the intake make up the `NodeService`;
`SignatureChecks` (node.signatures); and, unless the chain is one validator with no committee
(a set that can never change), the `PeerNetwork` (node.net.cluster: p2p listener, a link to
every peer, tx gossip, block sync).

A node halts by itself on a fatal error (a failed durable write, a committed block it cannot
execute, a task it owns that failed or ended): `await node.wait_stopped()` returns then, and
`node.fatal_error` says why. Every task the node owns (the runtime, the gossip intake, re-gossip,
and the peer network's) is started through `Node._spawn`, which watches it: none can die unseen.

Tests may plug in a transport of their own instead of the PeerNetwork with
`set_transport(transport, tx_gossip)`: the runtime sends engine messages through `transport`;
accepted submissions are gossiped through `tx_gossip` as a JSON array of transactions; received
engine messages go to `deliver` and gossiped transactions to `node.intake.receive_txs`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from consensus.api import Ed25519Signer, Ed25519Verifier, Engine, EngineConfig, EngineContext
from consensus.factory import carried_block_reader, history_blocks, make_engine, trusts_validators, verify_certificate
from ledger import governance, keys, valset
from ledger.block import Block, decode_block_header
from ledger.errors import Rejected
from ledger.genesis import Genesis
from ledger.state import ParseMemo
from ledger.tx import DecodeMemo, Propose, Transaction
from node.config import ConfigError, NodeConfig, load_config
from node.core.executor import BlockExecutor, BuildLimits
from node.core.mempool import Mempool, MempoolLimits
from node.core.validators import ValidatorSets
from node.feed import CommitFeed
from node.intake import TxGossip, TxIntake
from node.liveness import Liveness, quorum_of
from node.metrics import NodeMetrics
from node.net.cluster import PeerNetwork
from node.prefetch import ProposalPrefetch
from node.reads import ChainReads
from node.runtime import CommittedBlock, Runtime, SyncOutcome, Transport
from node.service import SubmitOutcome, TxStatus
from node.signatures import SignatureChecks
from storage import StorageError, Store

STARTUP_ERRORS = (ConfigError, StorageError)
# The engine counters that mean "a round (PBFT) or an election (Raft) ran out of time": how many of
# them happened since the last commit is how long consensus has been trying without progress.
ROUND_TIMEOUT_COUNTERS = ("round_timeouts", "election_timeouts")
# A bind address that means every interface: peers cannot dial it, so status names this host instead.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
# State keys read into the presence filter per turn of the event loop: about 10 ms of work.
PRESENCE_SLICE_KEYS = 5_000


def recent_proposers(store: Store, count: int) -> list[str]:
    """`header.proposer` of the last `count` committed blocks, oldest first: what the engine's
    proposer schedule reads, so that a restarted node computes the schedule every other node does."""
    tip = store.tip.height
    proposers = []
    for height, raw in store.load_blocks(tip - count + 1, tip + 1):
        try:
            proposers.append(decode_block_header(raw).proposer)
        except Rejected as exc:
            raise StorageError(f"the database at {store.location} is corrupt: block {height}: {exc.message}") from exc
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
        self.fatal_error: str | None = None
        self._state = "new"
        self.valsets = ValidatorSets(store, genesis)
        self._last_status: dict[str, Any] = {}
        # A node whose key is not in the set in force is an observer: it follows the chain by block
        # sync, never votes, and forwards what clients send it to the validators.
        observer = not self.is_validator
        # Parsed accounts and assets by their stored bytes, shared by admission and execution; and
        # decoded transactions, shared by gossip intake and the engine (which decodes proposals).
        self.parse_memo = ParseMemo()
        self.decode_memo = DecodeMemo()
        self.mempool = Mempool(store, genesis.chain_id, MempoolLimits(
            max_txs=config.mempool_max_txs, max_bytes=config.mempool_max_bytes,
            max_future_per_sender=config.mempool_max_future_per_sender, tx_ttl_s=config.mempool_tx_ttl_s,
            retry_after_s=config.mempool_retry_after_s, dropped_memory=config.dropped_tx_memory,
        ), time.monotonic, memo=self.parse_memo)
        self.executor = BlockExecutor(
            store, self.mempool, key.address, genesis.validator_ids,
            BuildLimits(config.max_block_txs, config.max_block_bytes, config.max_block_time_drift_ms,
                        empty_block_after_round_0=genesis.consensus == "pbft"),
            lambda: int(time.time() * 1000), self.parse_memo, validators_at=self.valsets.at,
        )
        context = EngineContext(
            chain_id=genesis.chain_id, validators=genesis.validator_ids, signer=Ed25519Signer(key),
            verifier=Ed25519Verifier(), checker=self.executor, tip=store.tip,
            rng=random.Random(int.from_bytes(os.urandom(16), "big")), restored=store.load_engine(),
            config=EngineConfig(), decode_memo=self.decode_memo, validators_at=self.valsets.at,
            recent_proposers=recent_proposers(store, history_blocks(
                genesis.consensus, len(self.valsets.at(store.tip.height + 1)))),
        )
        # Both engines have a passive seat: a node outside the set in force follows (by block sync,
        # and under Raft by the leader's appends once the set it joins is known) and takes up its
        # vote at the height its key enters the set.
        self.engine = engine_factory(genesis.consensus, context)
        metrics.watch_engine(lambda: dict(self.engine.counters))
        # Round or election timeouts counted up to the last commit (or the start): the baseline of
        # `rounds_without_commit` in /v1/status.
        self._timeouts_at_commit = self._round_timeouts()
        self.reads = ChainReads(store, self.mempool, self.parse_memo, validator_history=self.valsets)
        self.feed = CommitFeed(store, self.reads, buffer_blocks=config.ws_buffer_blocks,
                               accepting=lambda: self._state in ("new", "running"))
        self.runtime = Runtime(
            self.engine, store, self.executor, self.mempool, metrics, tick_ms=config.tick_ms,
            block_interval_ms=config.block_interval_ms, full_block_txs=config.max_block_txs,
            max_inbox=config.runtime_max_inbox, on_commit=self._on_commit, on_dropped=self.feed.on_dropped,
            logger=logger,
        )
        self.checks = SignatureChecks(self.mempool, metrics, logger, processes=config.verify_processes,
                                      name=self.node_id[:8])
        # PBFT: a proposal's unknown transaction signatures are checked in the workers before the
        # engine sees it, sharing checks already in flight for gossip (node.prefetch).
        carried = carried_block_reader(genesis.consensus)
        self.prefetch = None if carried is None else ProposalPrefetch(
            carried, self.checks, self.mempool, self.decode_memo, lambda: self.store.tip.height + 1,
            self.runtime.post_received, logger)
        metrics.watch_signatures(lambda: {**self.checks.counts, "block_check": self.executor.signatures_verified})
        # Raft assumes crash faults only: a transaction a peer gossips was verified by the validator
        # that took it from a client, and is not verified again here (see consensus.factory).
        self.intake = TxIntake(config, self.mempool, self.runtime, self.checks, metrics, logger,
                               trust_peers=trusts_validators(genesis.consensus), refusal=self._refusal,
                               decode_memo=self.decode_memo)
        self.intake.precheck = self._precheck
        self.service = NodeServiceImpl(self)
        self._connected_peers: Callable[[], Sequence[str]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._presence_task: asyncio.Task[None] | None = None
        self._runtime_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self.network: PeerNetwork | None = None
        # p2p runs unless the chain is one validator for ever (no committee to change the set): a
        # lone validator of a governed chain must be able to take an observer's link, or its chain
        # could never grow to two.
        if len(genesis.validator_ids) > 1 or observer or genesis.governance is not None:
            self.network = PeerNetwork(
                config=config, key=key, genesis=genesis, store=store, metrics=metrics, logger=logger,
                validators=self.valsets.at(store.tip.height + 1), known_validators=self.valsets.ever(),
                validators_at=self.valsets.at, known_through=self.valsets.known_through,
                deliver=self.deliver, receive_txs=self.intake.receive_txs, apply_synced=self._apply_synced,
                run_blocking=self.checks.run_blocking, sync_hint=self._sync_hint,
                verify_signatures=self.checks.verify_items, spawn=self._spawn,
            )
            self.intake.is_validator = self.network.is_validator
            self.runtime.core.synced_check = self._synced_check
        metrics.height.set(store.tip.height)
        metrics.watch_liveness(lambda: self.liveness().gauges())

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
        if key.address not in genesis.validator_ids and not config.peers:
            raise ConfigError(f"this node's key ({key.address[:16]}…, {config.path('node_key_file')}) is "
                              "not a validator in the genesis file, and an observer needs [peers] to follow "
                              "(ledgerd join writes them)")
        # The state's presence filter is filled by the running node (`_fill_presence`), not here: a
        # database with millions of accounts opens at once.
        logger = logging.getLogger("ledgerd.node")

        def reindexing(done: int, total: int) -> None:
            logger.info("indexing the stored blocks again: %d of %d (the database's indexes are missing "
                        "or of an older layout)", done, total, extra={"fields": {"blocks": done, "of": total}})

        store = Store.open(config.path("data_dir"), genesis, presence_now=False, reindex_progress=reindexing)
        if store.reindexed_blocks:
            logger.info("indexed %d stored blocks again (the database's indexes were missing or of an "
                        "older layout)", store.reindexed_blocks, extra={"fields": {"blocks": store.reindexed_blocks}})
        try:
            return cls(config, genesis, key, store, metrics or NodeMetrics(), logger,
                       engine_factory or make_engine)
        except ValueError as exc:
            store.close()
            raise ConfigError(f"cannot run the {genesis.consensus} engine: {exc}") from None
        except BaseException:
            store.close()
            raise

    @property
    def height(self) -> int:
        return self.store.tip.height

    @property
    def is_validator(self) -> bool:
        """True when this node's key is in the set deciding the next block."""
        return self.node_id in self.valsets.at(self.store.tip.height + 1)

    def _synced_check(self, block: Block, certificate: dict[str, Any]) -> str | None:
        """A synced block checked under a set that turned out not to be its height's (a change
        activated inside the batch) is checked again, under the set in force at its height."""
        assert self.network is not None
        expected = self.valsets.at(block.height)
        if self.network.sync.verified_under(block.hash) in (None, expected):
            return None
        if verify_certificate(self.genesis.consensus, block, certificate, expected, Ed25519Verifier()):
            return None
        return (f"its certificate is not valid under the {len(expected)} validators in force at height "
                f"{block.height} (a chain that skips a validator-set change)")

    def _precheck(self, tx: Transaction) -> Rejected | None:
        """Refuse a validator-set change that the validators this node is in touch with could not
        survive: after it, fewer of the remaining validators are connected than its quorum needs.
        (A node-local view, so it is checked at submission only, never in the chain's rules.)"""
        payload = tx.payload
        if not isinstance(payload, Propose) or payload.action not in valset.VALSET_ACTIONS:
            return None
        state = self.reads.governance.committed_state()
        try:
            governance.ACTIONS[payload.action].check(state, dict(payload.args))
        except Rejected as exc:
            return exc
        after = valset.preview(state, payload.action, dict(payload.args))
        connected = set(self._connected_peers()) if self._connected_peers is not None else set()
        remaining = set(after["validators"])
        in_touch = len(remaining & connected - {self.node_id}) + (1 if self.node_id in remaining else 0)
        if in_touch < after["quorum"]:
            return Rejected("invalid_proposal", f"after this change n={after['n']}, f={after['f']}, quorum "
                                                f"{after['quorum']}; only {in_touch} of the remaining validators "
                                                "are connected")
        return None

    @property
    def running(self) -> bool:
        return self._state == "running"

    def _refusal(self) -> str | None:
        """None while the node runs; otherwise why it admits nothing."""
        if self._state == "running":
            return None
        return self.fatal_error or "the node is not running"

    def set_transport(self, transport: Transport | None, tx_gossip: TxGossip | None = None,
                      connected_peers: Callable[[], Sequence[str]] | None = None) -> None:
        """Plug in a transport of one's own (engine messages, tx gossip, who is connected for
        /v1/status); `start()` does this itself with the node's PeerNetwork."""
        self.runtime.transport = transport
        self.intake.gossip_to(tx_gossip)
        self._connected_peers = connected_peers

    async def start(self) -> None:
        """Start the p2p network (ConfigError if its port cannot be bound), then the runtime."""
        if self._state != "new":
            raise RuntimeError(f"Node.start() called in state {self._state!r}")
        self.checks.start()
        if self.network is not None:
            await self.network.start()
            self.runtime.transport = self.network.consensus
            self.intake.tx_out = self.network.gossip
            self._connected_peers = self.network.connected_peers
        self._state = "running"
        self._runtime_task = self._spawn(self._run(), "runtime")
        self._tasks = [self._spawn(self.intake.run_gossip_intake(), "tx-gossip"),
                       self._spawn(self.intake.run_regossip(), "tx-regossip")]
        if self.prefetch is not None:
            self._tasks.append(self._spawn(self.prefetch.run(), "proposal-prefetch"))
        self._presence_task = asyncio.create_task(self._fill_presence(), name=f"state-presence-{self.node_id[:8]}")
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
            self.feed.close()
            self._stopped.set()

    async def _fill_presence(self) -> None:
        """Read every stored state key into the state view's presence filter, `PRESENCE_SLICE_KEYS`
        between two turns of the event loop; until it is full, state reads go to LevelDB."""
        started = time.monotonic()
        try:
            while True:
                if self.store.state.build_presence(PRESENCE_SLICE_KEYS):
                    break
                await asyncio.sleep(0)  # the runtime's turn
        except StorageError as exc:
            self._halt(f"storage failure: {exc}")
            return
        self.log.info("state presence filter ready", extra={"fields": {
            "seconds": round(time.monotonic() - started, 2)}})

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a task this node owns, watched: if it ends while the node runs (an exception, a
        cancellation from elsewhere, or returning at all: they are loops) the node halts."""
        task = asyncio.create_task(coro, name=f"{name}-{self.node_id[:8]}")
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if self._state != "running":
            # Ended by stop() or after a halt; a failure now is still reported, never lost.
            if error is not None:
                self.log.error("task %s failed after the node stopped running: %s: %s",
                               task.get_name(), type(error).__name__, error)
            return
        if error is not None:
            self.log.critical("task %s failed", task.get_name(), exc_info=error)
            self._halt(f"internal error in task {task.get_name()}: {type(error).__name__}: {error}")
        elif task.cancelled():
            self._halt(f"task {task.get_name()} was cancelled while the node was running")
        else:
            self._halt(f"task {task.get_name()} ended while the node was running")

    def _halt(self, reason: str) -> None:
        """Stop taking part: the first fatal error is the reason; the owner then calls `stop()`."""
        if self.fatal_error is None:
            self.fatal_error = reason
        if self._state in ("new", "running"):
            self._state = "halted"
        self.log.critical("node halted: %s", reason)
        self.runtime.request_stop()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        """Returns once the node stopped: after `stop()`, or when it halted by itself."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, stop p2p, stop the runtime after its current event, wake waiters, stop the
        signature workers and threads, close the DB.

        Every part is closed even when an earlier one fails (each failure is logged as one line),
        and a task that died is not awaited into a failure of its own: its error is the node's
        `fatal_error` already. Cancelling `stop()` does not skip the rest: it is re-raised at the end.
        """
        async with self._stop_lock:
            if self._state == "stopped":
                return
            if self._state != "halted":
                self._state = "stopping"
            cancelled = False
            for part, close in (
                ("the tx gossip tasks", self._stop_intake_tasks),
                ("the p2p network", self._stop_network),
                ("the consensus runtime", self._stop_runtime),
                ("the signature workers", self.checks.close_workers),
                ("the verification threads", self._stop_threads),
                ("the database", self._close_store),
            ):
                try:
                    await close()
                except asyncio.CancelledError:
                    cancelled = True
                    self.log.error("stopping %s was cancelled; closing the rest anyway", part)
                except Exception as exc:
                    self.log.error("stopping %s failed: %s: %s", part, type(exc).__name__, exc)
            self._state = "stopped"
            self._stopped.set()
            self.log.info("node stopped", extra={"fields": {"height": self.store.tip.height}})
            if cancelled:
                raise asyncio.CancelledError

    async def _stop_intake_tasks(self) -> None:
        tasks = [*self._tasks, *([self._presence_task] if self._presence_task is not None else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # never raises what a task died of

    async def _stop_network(self) -> None:
        if self.network is not None:
            await self.network.stop()

    async def _stop_runtime(self) -> None:
        self.runtime.request_stop()
        try:
            if self._runtime_task is not None:
                await asyncio.wait([self._runtime_task])
        finally:
            self.feed.close()

    async def _stop_threads(self) -> None:
        self.checks.close_threads()

    async def _close_store(self) -> None:
        try:
            self._last_status = self._read_status()  # what status() answers once the store is closed
        finally:
            self.store.close()

    def _on_commit(self, committed: CommittedBlock) -> None:
        self._timeouts_at_commit = self._round_timeouts()
        if self.network is not None:
            self.network.set_validators(self.valsets.at(self.store.tip.height + 1))
            self.network.announce_commit()
        self.feed.on_commit(committed)

    def _round_timeouts(self) -> int:
        counters = self.engine.counters
        return sum(counters.get(name, 0) for name in ROUND_TIMEOUT_COUNTERS)

    # --- what the network hands in ------------------------------------------------------------

    def deliver(self, peer: str, data: bytes) -> bool:
        """An engine message from an authenticated peer; False when it was dropped (inbox full)."""
        if self.prefetch is not None and self._state == "running":
            return self.prefetch.deliver(peer, data)
        return self.runtime.post_received(peer, data)

    async def _apply_synced(self, blocks: Sequence[tuple[Block, dict[str, Any]]]) -> SyncOutcome:
        if self._state != "running":
            return SyncOutcome(0, 0, "the node is not running")
        return await self.runtime.apply_synced(blocks)

    def _sync_hint(self) -> int | None:
        """A height the engine itself says it can only reach by block sync (Raft's needs_sync)."""
        hint = self.engine.status().get("needs_sync")
        return hint if type(hint) is int else None

    # --- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The node's status; after stop() closed the store, the last one read, with the state now."""
        if self.store.closed:
            return {**self._last_status, "state": self._state, "fatal_error": self.fatal_error}
        self._last_status = self._read_status()
        return self._last_status

    def _read_status(self) -> dict[str, Any]:
        tip = self.store.tip
        connected = set(self._connected_peers()) if self._connected_peers is not None else set()
        in_force = self.valsets.entries_at(tip.height)
        upcoming = self.valsets.entries_at(tip.height + 1)
        names = {v.node_id: v.name for v in self.genesis.validators}
        names.update({v["node_id"]: v["name"] for v in (*in_force, *upcoming)})
        network = self.network
        sync = network.sync.status() if network is not None else \
            {"syncing": False, "sync_target_height": None, "blocks_behind": 0}
        if network is not None:
            self.metrics.peers.set(network.connected_validators())
        engine = dict(self.engine.status())
        if "height" in engine:
            # The engine's height is the one it is deciding, one above the last committed block
            # (the top-level `height`); named for what it is so the two never look contradictory.
            engine["working_height"] = engine.pop("height")
        liveness = self._liveness(tip.timestamp, connected, engine, sync)
        return {
            "node_id": self.node_id,
            "name": names.get(self.node_id),
            "chain_id": self.chain_id,
            "genesis_hash": self.store.genesis_hash,
            "consensus": self.genesis.consensus,
            "state": self._state,
            "fatal_error": self.fatal_error,
            "consensus_health": liveness.health,
            "liveness": liveness.to_json(),
            "height": tip.height,
            "latest_hash": tip.block_hash,
            "latest_timestamp": tip.timestamp,
            "app_hash": tip.app_hash,
            "role": "validator" if self.is_validator else "observer",
            # The set in force at this node's height; `next_validators` differs only when a change
            # activates with the next block.
            "validators": [{"node_id": v["node_id"], "name": v["name"]} for v in in_force],
            "next_validators": [{"node_id": v["node_id"], "name": v["name"]} for v in upcoming],
            "validator_change": self.reads.governance.pending_validator_change(),
            "peers": [{"node_id": peer, "name": names.get(peer), "url": url, "connected": peer in connected,
                       "height": network.sync.peer_height(peer) if network is not None else None}
                      for peer, url in self.config.peers.items()],
            **self._p2p_addresses(),
            **sync,
            "mempool_size": len(self.mempool),
            "mempool_bytes": self.mempool.size_bytes,
            "engine": engine,
        }

    def liveness(self) -> Liveness:
        """The node's view of whether consensus can progress (also exported as gauges)."""
        network = self.network
        connected = set(self._connected_peers()) if self._connected_peers is not None else set()
        sync = network.sync.status() if network is not None else {}
        return self._liveness(self.store.tip.timestamp, connected, self.engine.status(), sync)

    def _liveness(self, last_commit_ms: int, connected: set[str], engine: Mapping[str, Any],
                  sync: Mapping[str, Any]) -> Liveness:
        validators = self.valsets.at(self.store.tip.height + 1)
        n = len(validators)
        f, quorum = quorum_of(self.genesis.consensus, n, engine)
        in_touch = len(connected & set(validators) - {self.node_id}) + (1 if self.node_id in validators else 0)
        return Liveness(
            consensus=self.genesis.consensus, validators=n, max_faulty=f, quorum=quorum, connected=in_touch,
            # The last block's timestamp is its proposer's clock: never report a negative age.
            seconds_since_commit=round(max(0.0, time.time() - last_commit_ms / 1000), 1),
            rounds_without_commit=max(0, self._round_timeouts() - self._timeouts_at_commit),
            syncing=bool(sync.get("syncing")), blocks_behind=int(sync.get("blocks_behind") or 0),
            running=self._state == "running", fatal_error=self.fatal_error,
            stall_rounds=self.config.stall_rounds,
        )

    def _p2p_addresses(self) -> dict[str, str | None]:
        """`p2p_url`: the URL peers dial to reach this node, written as their [peers] list it (the
        configured p2p_advertise_url, else wss://host:port, or ws:// with p2p_allow_plaintext);
        `p2p_bind`: where it listens."""
        network = self.network
        if network is None or network.url is None:
            return {"p2p_url": None, "p2p_bind": None}
        host, port = self.config.p2p_host, network.p2p.port
        scheme = "ws" if self.config.p2p_allow_plaintext else "wss"
        return {"p2p_url": advertised_p2p_url(self.config.p2p_advertise_url, host, port, socket.gethostname, scheme),
                "p2p_bind": f"{_bracketed(host)}:{port}"}


def advertised_p2p_url(advertise: str, host: str, port: int, hostname: Callable[[], str],
                       scheme: str = "wss") -> str:
    """The URL peers dial to reach a node listening on host:port, written as a [peers] table writes it
    (no path): `advertise` when configured; else scheme://host:port, with this machine's name for a
    wildcard bind address (which no peer can dial)."""
    if advertise:
        return advertise
    return f"{scheme}://{_bracketed(hostname() if host in WILDCARD_HOSTS else host)}:{port}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class NodeServiceImpl:
    """The `node.service.NodeService` the HTTP layer is given: the node's intake, reads and feed."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self.chain_id = node.chain_id
        self.node_id = node.node_id

    async def submit(self, txs: list[Any]) -> list[SubmitOutcome]:
        return await self._node.intake.submit(txs)

    async def wait_committed(self, tx_hash: str, timeout_s: float) -> TxStatus | None:
        return await self._node.feed.wait_committed(tx_hash, timeout_s)

    def tx_status(self, tx_hash: str) -> TxStatus | None:
        return self._node.reads.tx_status(tx_hash)

    def block(self, height: int | None) -> dict[str, Any] | None:
        return self._node.reads.block(height)

    def proof(self, tx_hash: str) -> dict[str, Any] | None:
        return self._node.reads.proof(tx_hash)

    def header_proof(self, height: int) -> dict[str, Any] | None:
        return self._node.reads.header_proof(height)

    def account(self, address: str) -> dict[str, Any]:
        return self._node.reads.account(address)

    def block_by_hash(self, block_hash: str) -> dict[str, Any] | None:
        return self._node.reads.block_by_hash(block_hash)

    def blocks(self, before: int | None, limit: int) -> dict[str, Any]:
        return self._node.reads.blocks(before, limit)

    def account_transactions(self, address: str, after: tuple[int, int] | None, limit: int) -> dict[str, Any]:
        return self._node.reads.account_transactions(address, after, limit)

    def account_records(self, owner: str, after: str | None, limit: int) -> dict[str, Any]:
        return self._node.reads.account_records(owner, after, limit)

    def search(self, query: str) -> dict[str, Any]:
        return self._node.reads.search(query)

    def record(self, owner: str, key: str) -> dict[str, Any] | None:
        return self._node.reads.record(owner, key)

    def status(self) -> dict[str, Any]:
        return self._node.status()

    def events(self, from_height: int | None) -> AsyncIterator[dict[str, Any]]:
        return self._node.feed.events(from_height)

    def governance(self) -> dict[str, Any]:
        return self._node.reads.governance.overview()

    def proposals(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return self._node.reads.governance.proposals(status, limit)

    def proposal(self, proposal_id: str) -> dict[str, Any] | None:
        return self._node.reads.governance.proposal(proposal_id)
