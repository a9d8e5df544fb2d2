"""`SignatureChecks`: where the node verifies Ed25519 signatures off its event loop.

Signature worker processes (`node.sigworkers`, `verify_processes` of them) when configured, else
a small thread pool; the same threads run block sync's certificate checks (`run_blocking`), and
block sync's signature checks go to the workers too (`verify_items`).
Correctness never depends on the workers: a lost worker's job is checked on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ledger import keys
from ledger.tx import Transaction
from node.core.mempool import Mempool
from node.metrics import NodeMetrics
from node.sigworkers import SignatureWorkers, WorkerLost

VERIFY_THREADS = 2
VERIFY_CHUNK = 64  # transactions per worker job; below this a batch is verified in one job
VERIFY_INLINE_BELOW = 32  # fewer signatures than this are checked on the loop (see verify)


class SignatureChecks:
    def __init__(self, mempool: Mempool, metrics: NodeMetrics, logger: logging.Logger, *,
                 processes: int, name: str) -> None:
        self._mempool = mempool
        self._metrics = metrics
        self._log = logger
        self._processes = processes
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self.workers: SignatureWorkers | None = None
        # Jobs on their way to the workers, by transaction hash: (signature, job, index in the job).
        # A transaction already being checked (gossip, then the proposal that carries it) waits for
        # that verdict instead of being checked a second time.
        self._in_flight: dict[str, tuple[bytes, asyncio.Future[list[bool]], int]] = {}
        # Signatures checked, by where (`ledgerd_signatures_verified_total`): on the event loop,
        # in the workers, and those that waited for a check already in flight instead.
        self.counts = {"inline": 0, "workers": 0, "shared": 0}

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(VERIFY_THREADS, f"verify-{self._name}")
        if self._processes > 0:
            self.workers = SignatureWorkers(self._processes)

    async def close_workers(self) -> None:
        if self.workers is not None:
            await self.workers.close()

    def close_threads(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """CPU-heavy checks (block sync) on the worker threads, off the event loop."""
        if self._pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def verify_items(self, items: list[tuple[str, bytes, bytes]]) -> list[bool]:
        """One verdict per (address, signature, signed bytes), as one job: in a worker process, a
        worker thread, or here before `start()`. Block sync hands it runs of blocks, many at once,
        so that every worker is busy while the core commits the runs already checked. No items: the
        workers are started, if they are not running yet (block sync asks so while it fetches)."""
        if not items:
            if self.workers is not None:
                with contextlib.suppress(WorkerLost):
                    await self.workers.warm_up()
            return []
        if self._pool is None:
            return keys.verify_many(items)
        return await self._job(items)

    async def verify(self, txs: list[Transaction]) -> list[bool | None] | None:
        """Check signatures in the worker processes (or threads), skipping known ones.

        Answers one verdict per transaction: True/False when checked here or known, None when the
        check was skipped because admission refuses the transaction by its nonce first (it then
        verifies it itself if, after all, it gets that far). None overall before `start()`:
        admission then verifies on the loop itself. A transaction whose check is already in flight
        (for gossip, or for a proposal: see `node.prefetch`) gets that check's verdict.
        """
        if self._pool is None:
            return None
        mempool = self._mempool
        in_flight = self._in_flight
        verdicts: list[bool | None] = []
        todo: list[int] = []
        shared: list[tuple[int, asyncio.Future[list[bool]], int]] = []
        for i, tx in enumerate(txs):
            if mempool.is_verified(tx):
                verdicts.append(True)
            elif mempool.is_stale(tx):  # typically gossip of a transaction a block already brought
                verdicts.append(None)
            else:
                verdicts.append(False)
                pending = in_flight.get(tx.hash)
                if pending is not None and pending[0] == tx.signature:
                    shared.append((i, pending[1], pending[2]))
                else:
                    todo.append(i)
        # A handoff to a worker process costs 0.15-0.45 ms of this process's CPU and ~0.25 ms of
        # the worker's (a pipe round trip alone is ~0.16 ms on the benchmark VM) against ~0.07 ms
        # a check: small jobs are cheaper here; large ones are worth freeing the event loop for.
        if len(todo) < VERIFY_INLINE_BELOW:
            self.counts["inline"] += len(todo)
            for i in todo:
                verdicts[i] = txs[i].signature_valid()
        else:
            await self._in_workers(txs, todo, verdicts)
        if shared:
            self.counts["shared"] += len(shared)
            for i, job, index in shared:
                try:
                    verdicts[i] = (await asyncio.shield(job))[index]
                except asyncio.CancelledError:
                    if not job.cancelled():
                        raise  # this caller was cancelled, not the job it waited for
                    verdicts[i] = txs[i].signature_valid()  # its owner gave up on it: check it here
        return verdicts

    async def _in_workers(self, txs: list[Transaction], todo: list[int], verdicts: list[bool | None]) -> None:
        workers = self.workers.count if self.workers is not None else VERIFY_THREADS
        chunk = max(VERIFY_CHUNK, -(-len(todo) // workers))
        in_flight = self._in_flight
        jobs: list[tuple[list[int], asyncio.Future[list[bool]]]] = []
        for start in range(0, len(todo), chunk):
            job = todo[start:start + chunk]
            future = asyncio.ensure_future(self._job([(txs[i].sender, txs[i].signature, txs[i].signing_bytes)
                                                      for i in job]))
            for index, i in enumerate(job):
                in_flight[txs[i].hash] = (txs[i].signature, future, index)
            jobs.append((job, future))
        self.counts["workers"] += len(todo)
        try:
            for job, running in jobs:
                for i, ok in zip(job, await running, strict=True):
                    verdicts[i] = ok
        finally:
            for job, running in jobs:
                if not running.done():
                    running.cancel()
                for i in job:
                    entry = in_flight.get(txs[i].hash)
                    if entry is not None and entry[1] is running:
                        del in_flight[txs[i].hash]

    async def _job(self, items: list[tuple[str, bytes, bytes]]) -> list[bool]:
        if self.workers is None:
            assert self._pool is not None
            return await asyncio.get_running_loop().run_in_executor(self._pool, keys.verify_many, items)
        try:
            return await self.workers.verify(items)
        except WorkerLost as exc:
            # Correctness does not depend on the workers: check here, and let the next job restart one.
            self._metrics.dropped.labels("signature_worker_lost").inc()
            self._log.warning("a signature worker failed (%s); verifying %d signatures on the node", exc, len(items))
            return keys.verify_many(items)
