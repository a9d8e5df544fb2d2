"""A long load that is never all in memory: a worker process signs transfers in chunks ahead of the
sender, which posts them closed-loop (at most `window` accepted and not yet committed) and follows
the commits on the first node's `GET /v1/events`, while a sampler writes the committed count, the
height and every node's resident memory to a JSONL file every few seconds.

Used by the long-haul and catch-up benchmarks (`cli.bench.longhaul`, `cli.bench.catchup`). Routing
and retries are those of `ledgerd bench --max` (cli/bench/load.py): account a's transfers go to
node a mod N in nonce order; retryable refusals are re-posted after Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import queue
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp

from cli.bench.load import MAX_BATCH, RETRY_CODES, follow_blocks
from cli.bench.setup import signed_transfers
from cli.bench.stats import rss_anon_mb, rss_mb
from ledger import keys

CHUNK = 5000  # transfers signed and handed over at a time
CHUNKS_AHEAD = 4  # chunks the signer may be ahead of the sender (bounds the memory held)
WORKERS_PER_NODE = 6
HTTP_TIMEOUT_S = 30.0
RETRY_AFTER_S = 0.5

Chunk = list[tuple[int, bytes]]  # (sender index, the transaction's canonical JSON)


def _sign_chunks(accounts: list[keys.PrivateKey], chain_id: str, total: int, fresh_salt: bytes | None,
                 out: Any) -> None:
    """The signer process: every chunk of the load in order, then None."""
    # The parent's SIGTERM handler raises SystemExit, which here would wait for the queue's feeder
    # thread to flush into a full pipe; terminate() must simply end this process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        out.put([(t.sender_index, t.body)
                 for t in signed_transfers(accounts, chain_id, start, stop, fresh_salt)])
    out.put(None)


@dataclass
class StreamCounters:
    sent: int = 0
    accepted: int = 0
    dropped: int = 0
    retried: int = 0
    http_errors: int = 0
    committed: int = 0  # every transaction in the blocks seen since the stream started
    failed: int = 0
    height: int = 0
    last_commit_s: float = 0.0
    refusals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamResult:
    counters: StreamCounters
    started_s: float  # monotonic
    ended_s: float  # the last commit seen (or the end of the drain)
    samples: list[dict[str, Any]]


class Stream:
    def __init__(self, nodes: list[str], pids: list[int], accounts: list[keys.PrivateKey], chain_id: str,
                 total: int, *, fresh_salt: bytes | None, window: int, sample_s: float, drain_s: float,
                 samples_file: IO[str] | None) -> None:
        self.nodes, self.pids = nodes, pids
        self.accounts, self.chain_id, self.total, self.fresh_salt = accounts, chain_id, total, fresh_salt
        self.window, self.sample_s, self.drain_s = window, sample_s, drain_s
        self.samples_file = samples_file
        self.samples: list[dict[str, Any]] = []
        self.c = StreamCounters()
        self.queues: list[deque[tuple[int, bytes]]] = [deque() for _ in nodes]
        self.signed_all = False
        self.t0 = 0.0

    def run(self) -> StreamResult:
        # fork before the event loop exists: the child inherits the keys and needs nothing else.
        ctx = multiprocessing.get_context("fork")
        chunks = ctx.Queue(maxsize=CHUNKS_AHEAD)
        signer = ctx.Process(target=_sign_chunks, name="bench-signer", daemon=True,
                             args=(self.accounts, self.chain_id, self.total, self.fresh_salt, chunks))
        signer.start()
        try:
            asyncio.run(self._run(chunks))
        finally:
            if signer.is_alive():
                signer.terminate()
            signer.join()
        end = self.c.last_commit_s or time.monotonic()
        # The last point is the chain at its last commit; samples taken while waiting for stragglers
        # after it would add idle time to the last interval (the JSONL keeps them).
        self.samples = [s for s in self.samples if s["t_s"] < end - self.t0]
        self._sample(end)
        return StreamResult(self.c, self.t0, end, self.samples)

    # --- the pieces ---------------------------------------------------------------------------------

    async def _feed(self, chunks: Any) -> None:
        """Move signed chunks into the per-node queues, keeping about two chunks queued."""
        while True:
            while sum(len(q) for q in self.queues) > 2 * CHUNK:  # noqa: ASYNC110 - polls the senders' progress
                await asyncio.sleep(0.05)
            try:
                # A bounded wait, so that a cancelled run does not leave a thread blocked for good.
                chunk: Chunk | None = await asyncio.to_thread(chunks.get, True, 0.5)
            except queue.Empty:
                continue
            if chunk is None:
                self.signed_all = True
                return
            for sender, body in chunk:
                self.queues[sender % len(self.nodes)].append((sender, body))

    async def _worker(self, session: aiohttp.ClientSession, index: int) -> None:
        queue = self.queues[index]
        while True:
            if not queue:
                if self.signed_all:
                    return
                await asyncio.sleep(0.01)
                continue
            if self.c.accepted - self.c.committed + MAX_BATCH > self.window:
                await asyncio.sleep(0.005)
                continue
            batch = [queue.popleft() for _ in range(min(MAX_BATCH, len(queue)))]
            while batch:
                batch = await self._post(session, self.nodes[index], batch)

    async def _post(self, session: aiohttp.ClientSession, node: str, batch: Chunk) -> Chunk:
        """Post one batch; answers the transactions to post again."""
        self.c.sent += len(batch)
        data = b"[" + b",".join(body for _, body in batch) + b"]"
        try:
            async with session.post(node + "/v1/transactions", data=data,
                                    headers={"Content-Type": "application/json"}) as resp:
                answer = await resp.json(content_type=None)
                retry_after = float(resp.headers.get("Retry-After", RETRY_AFTER_S))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.c.http_errors += 1
            self.c.sent -= len(batch)
            await asyncio.sleep(RETRY_AFTER_S)
            return batch
        if isinstance(answer, dict):  # the whole batch refused
            code = str((answer.get("error") or {}).get("code", "unknown"))
            answer = [{"status": "rejected", "error": {"code": code}}] * len(batch)
        if not isinstance(answer, list) or len(answer) != len(batch):
            self.c.http_errors += 1
            self._drop(len(batch), "unexpected_answer")
            return []
        again = []
        for tx, result in zip(batch, answer, strict=True):
            status = result.get("status") if isinstance(result, dict) else None
            code = str(((result.get("error") or {}) if isinstance(result, dict) else {}).get("code", "unknown"))
            if status == "pending" or code == "duplicate":
                self.c.accepted += 1
            elif code in RETRY_CODES:
                again.append(tx)
            else:
                self._drop(1, code)
        if again:
            self.c.retried += len(again)
            self.c.sent -= len(again)
            await asyncio.sleep(min(retry_after, 1.0))
        return again

    def _drop(self, count: int, code: str) -> None:
        self.c.dropped += count
        self.c.refusals[code] = self.c.refusals.get(code, 0) + count

    async def _follow(self, session: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        await follow_blocks(session, self.nodes[0], ready, self._on_block)

    def _on_block(self, event: dict[str, Any]) -> None:
        self.c.height = int(event["height"])
        txs = event.get("txs")
        if isinstance(txs, list) and txs:
            self.c.committed += len(txs)
            self.c.failed += sum(1 for t in txs if t.get("status") != "committed")
            self.c.last_commit_s = time.monotonic()

    def _sample(self, now: float) -> None:
        row = {"t_s": round(now - self.t0, 3), "committed": self.c.committed, "failed": self.c.failed,
               "height": self.c.height, "sent": self.c.sent, "accepted": self.c.accepted,
               "dropped": self.c.dropped, "rss_mb": [rss_mb(p) for p in self.pids],
               "rss_anon_mb": [rss_anon_mb(p) for p in self.pids]}
        self.samples.append(row)
        if self.samples_file is not None:
            self.samples_file.write(json.dumps(row, separators=(",", ":")) + "\n")
            self.samples_file.flush()

    async def _sampler(self) -> None:
        last_committed, last_t = 0, self.t0
        while True:
            await asyncio.sleep(self.sample_s)
            now = time.monotonic()
            self._sample(now)
            rate = (self.c.committed - last_committed) / max(1e-9, now - last_t)
            last_committed, last_t = self.c.committed, now
            rss = " ".join("-" if r is None else f"{r:.0f}" for r in self.samples[-1]["rss_mb"])
            print(f"{now - self.t0:7.0f}s  committed {self.c.committed}/{self.total}  "
                  f"{rate:.0f} tx/s  height {self.c.height}  rss MiB {rss}  dropped {self.c.dropped}",
                  file=sys.stderr, flush=True)

    async def _run(self, chunks: Any) -> None:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit_per_host=WORKERS_PER_NODE, limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session, \
                aiohttp.ClientSession() as ws_session:
            ready = asyncio.Event()
            follower = asyncio.create_task(self._follow(ws_session, ready))
            async with asyncio.timeout(10):
                await ready.wait()
            self.t0 = time.monotonic()
            self._sample(self.t0)
            sampler = asyncio.create_task(self._sampler())
            try:
                await asyncio.gather(self._feed(chunks), *(self._worker(session, i) for i in range(len(self.nodes))
                                                           for _ in range(WORKERS_PER_NODE)))
                deadline = time.monotonic() + self.drain_s
                while self.c.committed < self.c.accepted and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # noqa: ASYNC110 - a bounded poll of the sender's progress
            finally:
                for task in (follower, sampler):
                    task.cancel()
                await asyncio.gather(follower, sampler, return_exceptions=True)
