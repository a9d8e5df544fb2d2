"""The signature worker pool on its own: answers in order per worker, mixed verdicts, a worker
killed mid-run fails only its waiting jobs (WorkerLost) and is started again, close() leaves no
process behind, and the framing refuses what it cannot parse."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal

import pytest

from ledger import keys
from ledger.tx import Transfer, sign_tx
from node.sigworkers import F_GETPIPE_SZ, PIPE_BYTES, SignatureWorkers, WorkerLost, check_request, encode_request

KEY = keys.PrivateKey.from_seed(bytes(range(32)))
OTHER = keys.PrivateKey.from_seed(bytes(range(1, 33)))

pytestmark = pytest.mark.timeout(60)


def items(count: int, forged: set[int] = frozenset()) -> list[tuple[str, bytes, bytes]]:  # type: ignore[assignment]
    out = []
    for n in range(count):
        tx = sign_tx(KEY, "c", n, Transfer(OTHER.address, "LDG", 1))
        signature = OTHER.sign(tx.signing_bytes) if n in forged else tx.signature
        out.append((tx.sender, signature, tx.signing_bytes))
    return out


def alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_framing_round_trips_and_refuses_truncation() -> None:
    batch = items(3, forged={1})
    frame = encode_request(batch)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert check_request(frame[4:]) == b"\x01\x00\x01"
    with pytest.raises(ValueError):
        check_request(frame[4:-1])
    with pytest.raises(ValueError):
        encode_request([("ab" * 32, b"short", b"m")])


async def test_jobs_on_many_workers_get_their_own_answers() -> None:
    pool = SignatureWorkers(2)
    try:
        jobs = [items(n + 1, forged={n}) for n in range(12)]
        answers = await asyncio.gather(*(pool.verify(job) for job in jobs))
        for n, answer in enumerate(answers):
            assert answer == [i != n for i in range(n + 1)]
        assert await pool.verify([]) == []
        assert len(pool.pids()) == 2 and pool.started == 2
    finally:
        await pool.close()


async def test_a_killed_worker_fails_its_jobs_and_is_replaced() -> None:
    pool = SignatureWorkers(1)
    try:
        assert await pool.verify(items(2)) == [True, True]
        [pid] = pool.pids()
        big = items(4000)  # about 0.3 s of checks: killed mid-job
        waiting = asyncio.ensure_future(pool.verify(big))
        await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLost):
            await waiting
        assert await pool.verify(items(3, forged={2})) == [True, True, False]
        assert pool.started == 2 and pool.pids() != [pid]
    finally:
        await pool.close()


async def test_close_stops_every_worker_and_refuses_more_work() -> None:
    pool = SignatureWorkers(2)
    await pool.verify(items(4))
    pids = pool.pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    await pool.close()
    assert not any(alive(p) for p in pids)
    with pytest.raises(WorkerLost):
        await pool.verify(items(1))


async def test_the_pipe_to_a_worker_holds_several_jobs() -> None:
    """A job goes to its worker in one write: the pipe is widened from Linux's 64 KiB to 1 MiB
    (a job of 64 transfers is ~27 KiB), and a job larger than the old pipe still comes back whole."""
    pool = SignatureWorkers(1)
    try:
        assert await pool.verify(items(400, forged={399})) == [True] * 399 + [False]  # ~170 KiB
        worker = pool._workers[0]
        assert worker is not None and worker.process.stdin is not None
        pipe = worker.process.stdin.transport.get_extra_info("pipe")
        assert fcntl.fcntl(pipe.fileno(), F_GETPIPE_SZ) >= PIPE_BYTES
    finally:
        await pool.close()
