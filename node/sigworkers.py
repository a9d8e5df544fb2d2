"""Worker processes for signature checks: their own interpreters, so their own GILs.

A verify *thread* releases the GIL inside each Ed25519 check but must take it back between checks;
while the event loop is busy that wait (up to the interpreter's switch interval) dominates, so a
node checks signatures in worker processes. `concurrent.futures.ProcessPoolExecutor` did that at
about 0.5 ms of the node's CPU per job (pickling, a manager thread and a feeder thread waking and
taking the GIL) and 0.2 ms of the worker's: more than checking ten signatures inline. Here each
worker is a plain subprocess (`python -m node.sigworkers`) on two pipes read and written by the
event loop itself, with a flat binary framing:

    request   u32 length, then per item: public key (32 bytes), signature (64), u32 n, message (n)
    response  u32 length, then one byte per item: 1 valid, 0 not

A worker answers its requests in order, so each keeps a FIFO of the futures waiting on it. Workers
start on first use and die with the node: a worker exits when its stdin reaches end of file (the
node closed it, or died), and asks the kernel for SIGKILL when its parent exits (Linux
`PR_SET_PDEATHSIG`), so a node killed with `kill -9` leaves none behind even mid-batch. A worker
that dies fails its waiting jobs with `WorkerLost` (the caller checks those signatures itself) and
is started again on the next job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from collections import deque
from collections.abc import Sequence
from typing import BinaryIO

from ledger import keys

PR_SET_PDEATHSIG = 1
F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity
F_GETPIPE_SZ = 1032
PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged process (fs.pipe-max-size)
_U32 = 4
_ITEM_HEAD = 32 + 64 + _U32
MAX_REQUEST_BYTES = 256 * 1024 * 1024  # a worker refuses (exits on) anything larger: a framing bug
START_TIMEOUT_S = 30.0


class WorkerLost(Exception):
    """A worker process died (or could not start) before answering."""


def encode_request(items: Sequence[tuple[str, bytes, bytes]]) -> bytes:
    """(address hex, signature, message) triples as one request frame."""
    parts = [b""]
    for address, signature, message in items:
        if len(signature) != 64 or len(address) != 64:
            raise ValueError("a signature is 64 bytes and an address 64 hex characters")
        parts.append(bytes.fromhex(address) + signature + len(message).to_bytes(_U32, "big") + message)
    body = b"".join(parts)
    return len(body).to_bytes(_U32, "big") + body


def check_request(body: bytes) -> bytes:
    """The worker's side: one result byte per item of a request body."""
    view = memoryview(body)
    out = bytearray()
    pos = 0
    while pos < len(body):
        head_end = pos + _ITEM_HEAD
        size = int.from_bytes(view[pos + 96:head_end], "big")
        end = head_end + size
        if head_end > len(body) or end > len(body):
            raise ValueError("truncated request")
        out.append(keys.verify_raw(bytes(view[pos:pos + 32]), bytes(view[pos + 32:pos + 96]),
                                   bytes(view[head_end:end])))
        pos = end
    return bytes(out)


class _Worker:
    __slots__ = ("process", "waiting", "reader", "items", "lost")

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lost = False  # failed: replaced on the next job (its exit may not be reaped yet)
        self.waiting: deque[asyncio.Future[list[bool]]] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.items = 0  # items sent and not yet answered: the load used to pick a worker


class SignatureWorkers:
    """`count` worker processes checking Ed25519 signatures; `verify` from the event loop only."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self.count = count
        self._workers: list[_Worker | None] = [None] * count
        self._closed = False
        self._starting = asyncio.Lock()
        self.started = 0  # worker processes started so far (restarts included)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w is not None and not w.lost]

    async def verify(self, items: Sequence[tuple[str, bytes, bytes]]) -> list[bool]:
        """Whether each (address, signature, message) is valid; WorkerLost if the worker died."""
        if self._closed:
            raise WorkerLost("the signature workers are stopped")
        if not items:
            return []
        request = encode_request(items)
        worker = await self._least_loaded()
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        worker.waiting.append(future)
        worker.items += len(items)
        stdin = worker.process.stdin
        assert stdin is not None
        try:
            try:
                stdin.write(request)
                await stdin.drain()
            except (ConnectionError, BrokenPipeError) as exc:
                self._lost(worker, f"worker {worker.process.pid} is gone: {exc}")  # fails `future` too
            return await future
        finally:
            worker.items -= len(items)

    async def warm_up(self) -> None:
        """Start the workers not running yet, ahead of a large job (block sync, once it fetches)."""
        if not self._closed:
            await self._least_loaded()

    async def _least_loaded(self) -> _Worker:
        if any(w is None or w.lost for w in self._workers):
            async with self._starting:  # concurrent first jobs must not each start a set of workers
                for index, worker in enumerate(self._workers):
                    if worker is None or worker.lost:
                        self._workers[index] = await self._start()
        return min((w for w in self._workers if w is not None), key=lambda w: w.items)

    async def _start(self) -> _Worker:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "node.sigworkers", str(os.getpid()),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
                    limit=1 << 20)
        except (OSError, TimeoutError) as exc:
            raise WorkerLost(f"cannot start a signature worker: {exc}") from None
        _widen_pipe(process.stdin)
        worker = _Worker(process)
        worker.reader = asyncio.create_task(self._read(worker), name=f"sigworker-{process.pid}")
        self.started += 1
        return worker

    async def _read(self, worker: _Worker) -> None:
        """The owned task that hands each answer of `worker` to the oldest job waiting on it."""
        stdout = worker.process.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(_U32)
                data = await stdout.readexactly(int.from_bytes(head, "big"))
                if not worker.waiting:
                    raise ValueError("an answer nobody asked for")
                future = worker.waiting.popleft()
                if not future.done():
                    future.set_result([b == 1 for b in data])
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            self._lost(worker, f"worker {worker.process.pid} stopped answering: {exc!r}")

    def _lost(self, worker: _Worker, reason: str) -> None:
        worker.lost = True
        while worker.waiting:
            future = worker.waiting.popleft()
            if not future.done():
                future.set_exception(WorkerLost(reason))
        if worker.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()

    async def close(self) -> None:
        """Stop every worker: close its stdin (it exits), then wait for it (killing a slow one)."""
        self._closed = True
        for worker in self._workers:
            if worker is None:
                continue
            if worker.process.stdin is not None:
                worker.process.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await worker.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                worker.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reader
            self._lost(worker, "the signature workers are stopped")
        self._workers = [None] * self.count


def _widen_pipe(stdin: asyncio.StreamWriter | None) -> None:
    """Give the pipe to a worker room for a whole job or several (Linux's default is 64 KiB, less
    than two jobs of 64 transactions): a job then goes out in one write, not in pieces as the
    worker drains the pipe. Best effort: a kernel that refuses keeps the default."""
    pipe = None if stdin is None else stdin.transport.get_extra_info("pipe")
    if pipe is not None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, ValueError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)


# --- the worker process ---------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    read = stream.read
    chunks = []
    while size:
        chunk = read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def worker_main(argv: list[str]) -> int:
    _die_with_parent(int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the node stops us
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = _read_exactly(source, _U32)
        if head is None:
            return 0  # the node closed our stdin, or died
        size = int.from_bytes(head, "big")
        if size > MAX_REQUEST_BYTES:
            return 2
        body = _read_exactly(source, size)
        if body is None:
            return 0
        answer = check_request(body)
        sink.write(len(answer).to_bytes(_U32, "big") + answer)
        sink.flush()


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
