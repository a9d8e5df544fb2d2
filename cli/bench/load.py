"""Submitting the pre-signed load and following the commits.

Account a's transactions always go to node a mod N, in nonce order, so a node sees each sender's
nonces in sequence. Open-loop: a ticker releases `rate` transactions per second into per-node batches
and fires each batch without waiting for earlier ones; a refusal counts as dropped. Closed-loop: a
few workers per node each post the next batch as soon as the previous one is answered, while at most
`window` transactions are sent and not yet committed (without that bound the loop measures how deep
the mempools fill, and latency grows with the run); refusals the node marks retryable (and
nonce_too_far, which only means an earlier batch is still in flight) are re-posted after Retry-After.
Commits come from one node's GET /v1/events stream; latency is from the moment a transaction's batch
was posted to the moment its block event arrived.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cli.bench.setup import SignedTx
from cli.bench.stats import percentile

TICK_S = 0.02
MAX_BATCH = 200  # transactions per POST; well under the node's default batch limit of 1000
CONNECTIONS_PER_NODE = 8
HTTP_TIMEOUT_S = 30.0
DEFAULT_RETRY_AFTER_S = 1.0
PROGRESS_TTY_S = 0.5
PROGRESS_LINE_S = 2.0
RETRY_CODES = frozenset({"mempool_full", "too_many_subscribers", "shutting_down", "nonce_too_far"})
WS_RECONNECT_S = 0.5


async def follow_blocks(session: aiohttp.ClientSession, node: str, ready: asyncio.Event,
                        on_block: Callable[[dict[str, Any]], None]) -> None:
    """Follow `node`'s /v1/events for ever, handing every block event to `on_block`: set `ready` once
    subscribed, and after a lost connection subscribe again from the next height, so no block is
    missed or counted twice."""
    url = node.replace("http", "ws", 1) + "/v1/events"
    next_height: int | None = None
    while True:
        query = f"?from_height={next_height}" if next_height is not None else ""
        try:
            async with session.ws_connect(url + query, heartbeat=10.0) as ws:
                ready.set()
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    event = msg.json()
                    if event.get("type") != "block":
                        break
                    next_height = int(event["height"]) + 1
                    on_block(event)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        await asyncio.sleep(WS_RECONNECT_S)


@dataclass
class Counters:
    sent: int = 0
    accepted: int = 0
    dropped: int = 0  # refused and not retried (open-loop), or refused for good (closed-loop)
    retried: int = 0
    committed: int = 0
    failed: int = 0  # committed in a block but with a failed result
    http_errors: int = 0
    submitted_at: dict[str, float] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    last_commit_s: float = 0.0
    refusals: dict[str, int] = field(default_factory=dict)


class Bench:
    def __init__(self, nodes: list[str], txs: list[SignedTx], *, rate: float | None, duration_s: float,
                 drain_s: float, tty: bool, window: int = 4000) -> None:
        self.nodes = nodes
        self.rate = rate
        self.duration_s = duration_s
        self.drain_s = drain_s
        self.tty = tty
        self.c = Counters()
        self.ours = {t.hash for t in txs}
        self.queues: list[deque[SignedTx]] = [deque() for _ in nodes]
        for tx in txs:
            self.queues[tx.sender_index % len(nodes)].append(tx)
        self.total = len(txs)
        self.t0 = 0.0
        self.window = window
        self.ran_out_s: float | None = None  # when every pre-signed transaction had been sent early

    # --- submission ---------------------------------------------------------------------------------

    async def _post(self, session: aiohttp.ClientSession, node: str, batch: list[SignedTx],
                    retry: bool) -> list[SignedTx]:
        """Post one batch; answers the transactions to re-post (only when `retry`)."""
        now = time.monotonic()
        for tx in batch:
            self.c.submitted_at.setdefault(tx.hash, now)
        self.c.sent += len(batch)
        data = b"[" + b",".join(t.body for t in batch) + b"]"
        try:
            async with session.post(node + "/v1/transactions", data=data,
                                    headers={"Content-Type": "application/json"}) as resp:
                answer = await resp.json(content_type=None)
                retry_after = float(resp.headers.get("Retry-After", DEFAULT_RETRY_AFTER_S))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.c.http_errors += 1
            return list(batch) if retry else self._drop(batch, "http_error")
        if isinstance(answer, dict):  # the whole batch was refused
            code = str((answer.get("error") or {}).get("code", "unknown"))
            results: list[Any] = [{"status": "rejected", "error": {"code": code}}] * len(batch)
        elif isinstance(answer, list) and len(answer) == len(batch):
            results = answer
        else:
            self.c.http_errors += 1
            return self._drop(batch, "unexpected_answer")
        again = []
        for tx, result in zip(batch, results, strict=False):
            if not isinstance(result, dict):
                self._drop([tx], "unexpected_answer")
                continue
            if result.get("status") == "pending":
                self.c.accepted += 1
                continue
            code = str((result.get("error") or {}).get("code", "unknown"))
            if code == "duplicate":  # a re-post of one the node already holds
                self.c.accepted += 1
                continue
            if retry and code in RETRY_CODES:
                again.append(tx)
            else:
                self._drop([tx], code)
        if again:
            self.c.retried += len(again)
            self.c.sent -= len(again)  # counted again when re-posted
            await asyncio.sleep(min(retry_after, 1.0) if again else 0)
        return again

    def _drop(self, txs: list[SignedTx], code: str) -> list[SignedTx]:
        self.c.dropped += len(txs)
        self.c.refusals[code] = self.c.refusals.get(code, 0) + len(txs)
        for tx in txs:
            self.c.submitted_at.pop(tx.hash, None)
        return []

    async def _open_loop(self, session: aiohttp.ClientSession) -> None:
        assert self.rate is not None
        released = 0
        tasks: set[asyncio.Task[list[SignedTx]]] = set()
        end = self.t0 + self.duration_s
        while released < self.total:
            now = time.monotonic()
            if now >= end:
                break
            due = min(self.total, int((now - self.t0) * self.rate)) - released
            if due > 0:
                per_node: list[list[SignedTx]] = [[] for _ in self.nodes]
                for _ in range(due):
                    # Round-robin over nodes keeps every node's share even and in nonce order.
                    node = released % len(self.nodes)
                    queue = self.queues[node] or next(q for q in self.queues if q)
                    per_node[self.queues.index(queue)].append(queue.popleft())
                    released += 1
                for index, batch in enumerate(per_node):
                    for start in range(0, len(batch), MAX_BATCH):
                        task = asyncio.create_task(
                            self._post(session, self.nodes[index], batch[start:start + MAX_BATCH], False))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            await asyncio.sleep(TICK_S)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _closed_worker(self, session: aiohttp.ClientSession, index: int, end: float) -> None:
        queue = self.queues[index]
        while time.monotonic() < end and queue:
            if len(self.c.submitted_at) + MAX_BATCH > self.window:
                await asyncio.sleep(TICK_S / 4)  # noqa: ASYNC110 - waiting for commits to open the window
                continue
            batch = [queue.popleft() for _ in range(min(MAX_BATCH, len(queue)))]
            while batch and time.monotonic() < end:
                batch = await self._post(session, self.nodes[index], batch, True)
            if batch:  # the clock ran out while these were being refused
                self._drop(batch, "not_sent_in_time")
        if not any(self.queues) and self.ran_out_s is None and time.monotonic() < end:
            self.ran_out_s = time.monotonic() - self.t0

    async def _closed_loop(self, session: aiohttp.ClientSession) -> None:
        end = self.t0 + self.duration_s
        await asyncio.gather(*(self._closed_worker(session, i, end)
                               for i in range(len(self.nodes)) for _ in range(CONNECTIONS_PER_NODE)))

    # --- commits ------------------------------------------------------------------------------------

    async def _follow(self, session: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        await follow_blocks(session, self.nodes[0], ready, self._on_block)

    def _on_block(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        txs = event.get("txs")
        if not isinstance(txs, list):
            return
        for tx in txs:
            tx_hash = tx.get("hash")
            if tx_hash not in self.ours:
                continue
            self.ours.discard(tx_hash)
            sent = self.c.submitted_at.pop(tx_hash, None)
            self.c.committed += 1
            if tx.get("status") != "committed":
                self.c.failed += 1
            if sent is not None:
                self.c.latencies_s.append(now - sent)
            self.c.last_commit_s = now

    # --- progress -----------------------------------------------------------------------------------

    def progress_text(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.t0)
        p50 = percentile(sorted(self.c.latencies_s[-5000:]), 0.5)
        p50_text = f"{p50 * 1000:.0f}ms" if p50 is not None else "-"
        return (f"{elapsed:5.1f}s  sent {self.c.sent}  committed {self.c.committed}  "
                f"tps {self.c.committed / elapsed:.0f}  p50 {p50_text}  dropped {self.c.dropped}")

    async def _progress(self) -> None:
        every = PROGRESS_TTY_S if self.tty else PROGRESS_LINE_S
        while True:
            await asyncio.sleep(every)
            if self.tty:
                sys.stderr.write("\r" + self.progress_text().ljust(79))
            else:
                sys.stderr.write(self.progress_text() + "\n")
            sys.stderr.flush()

    # --- the run ------------------------------------------------------------------------------------

    async def run(self) -> float:
        """Submit and follow; answers the wall time the sending phase started at (monotonic)."""
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit_per_host=CONNECTIONS_PER_NODE, limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session, \
                aiohttp.ClientSession() as ws_session:
            ready = asyncio.Event()
            follower = asyncio.create_task(self._follow(ws_session, ready))
            async with asyncio.timeout(10):
                await ready.wait()
            self.t0 = time.monotonic()
            progress = asyncio.create_task(self._progress())
            try:
                if self.rate is not None:
                    await self._open_loop(session)
                else:
                    await self._closed_loop(session)
                # Let what was accepted commit, within a bound.
                deadline = time.monotonic() + self.drain_s
                while self.c.submitted_at and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded poll
                    await asyncio.sleep(0.05)
            finally:
                for task in (follower, progress):
                    task.cancel()
                await asyncio.gather(follower, progress, return_exceptions=True)
                if self.tty:
                    sys.stderr.write("\r" + self.progress_text().ljust(79) + "\n")
                    sys.stderr.flush()
        return self.t0
