"""What LevelDB's compaction costs a node's write pattern as the chain grows, without the node.

Replays what `Store` writes for blocks of transfers to accounts never seen before: per block the
engine's prepared-block record and the block's batch (block, receipts, hashes, certificate, one tx
index entry and two account index entries per transfer, the new account, the senders' accounts, the
head), both synced, with the same key layout and value sizes, and optionally a read of each new
account before the block (execution reads the recipient, which is not there). After each block it
waits until LevelDB's background thread is idle, so that compaction keeps up as it does in a slow
cluster, and reports that thread's CPU per transfer over each fifth of the run and the bytes
LevelDB's LOG says compaction wrote. The variants are the ones docs/benchmarks.md compares
("Compaction that does not grow with the chain"):

    python -m cli.bench.compaction --transactions 2000000 --epoch-txs 0 --absent-reads 1   # before
    python -m cli.bench.compaction --transactions 2000000 --absent-reads 1                 # epochs
    python -m cli.bench.compaction --transactions 2000000 --absent-reads 0                 # both

It reads only the thread CPU of its own process (/proc), so other load on the machine changes its
wall time, not its figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import plyvel  # the bench measures LevelDB itself, with the node's options

from cli.bench.stats import stat_cpu_s
from storage.plyvel_backend import BLOOM_FILTER_BITS, COMPRESSION, WRITE_BUFFER_BYTES

SENDERS = 200
COMPACTED = re.compile(rb"Compacted \d+@(\d+) \+ \d+@\d+ files => (\d+) bytes")


def thread_cpu_s() -> tuple[float, float]:
    """(this process's main thread, every other thread) CPU seconds."""
    me = os.getpid()
    main = other = 0.0
    for task in Path(f"/proc/{me}/task").iterdir():
        cpu = stat_cpu_s(task / "stat") or 0.0
        if task.name == str(me):
            main += cpu
        else:
            other += cpu
    return main, other


def wait_idle(poll_s: float = 0.03) -> None:
    """Return once LevelDB's background thread used no CPU over one poll."""
    last = thread_cpu_s()[1]
    while True:
        time.sleep(poll_s)
        now = thread_cpu_s()[1]
        if now == last:
            return
        last = now


def compaction_bytes(log: Path) -> dict[int, int]:
    """Bytes written by compaction, by the level compacted from (LevelDB's LOG)."""
    out: dict[int, int] = {}
    for match in COMPACTED.finditer(log.read_bytes()):
        level = int(match.group(1))
        out[level] = out.get(level, 0) + int(match.group(2))
    return out


def replay(path: Path, transactions: int, block_txs: int, epoch_txs: int, absent_reads: int,
           sequential_accounts: bool, report: int = 5) -> dict[str, object]:
    db = plyvel.DB(str(path), create_if_missing=True, bloom_filter_bits=BLOOM_FILTER_BITS,
                   compression=COMPRESSION, write_buffer_size=WRITE_BUFFER_BYTES)
    senders = [os.urandom(32) for _ in range(SENDERS)]
    blocks = transactions // block_txs
    marks = {max(1, blocks * (i + 1) // report) for i in range(report)}
    per_part: list[float] = []
    last_bg, last_done, started = 0.0, 0, time.monotonic()
    try:
        for b in range(blocks):
            height = (b + 1).to_bytes(8, "big")
            done = b * block_txs
            epoch = (done // epoch_txs).to_bytes(4, "big") if epoch_txs else b""
            body = os.urandom(150 * block_txs).hex().encode()  # ~300 bytes a transfer, as JSON
            db.put(b"ebft/prepared_block", body, sync=True)
            fresh = [b"%032d" % (done + i) if sequential_accounts else os.urandom(32) for i in range(block_txs)]
            for i in range(block_txs * absent_reads):
                db.get(b"sa" + fresh[i % block_txs])
            for sender in senders:
                db.get(b"sa" + sender)
            with db.write_batch(transaction=True, sync=True) as batch:
                batch.put(b"b" + height, body)
                batch.put(b"r" + height, b'{"code":"ok"},' * block_txs)
                batch.put(b"h" + height, os.urandom(32 * block_txs))
                batch.put(b"c" + height, b"c" * 400)
                for i in range(block_txs):
                    where = height + i.to_bytes(4, "big")
                    batch.put(b"t" + epoch + os.urandom(32), where + b'{"code":"ok"}')
                    batch.put(b"x" + epoch + senders[i % SENDERS] + where, b"v" * 72)
                    batch.put(b"x" + epoch + fresh[i] + where, b"v" * 72)
                    batch.put(b"sa" + fresh[i], b'{"balances":{"LDG":1},"nonce":0}')
                for sender in senders:
                    batch.put(b"sa" + sender, b'{"balances":{"LDG":99999999},"nonce":%d}' % b)
                batch.put(b"mtip", b"t" * 150)
            wait_idle()
            if b + 1 in marks:
                bg = thread_cpu_s()[1]
                txs = (b + 1) * block_txs - last_done
                per_part.append(round((bg - last_bg) / txs * 1e6, 1))
                print(f"{(b + 1) * block_txs:>10,} transfers  {time.monotonic() - started:7.1f} s  "
                      f"LevelDB thread {per_part[-1]} µs a transfer", flush=True)
                last_bg, last_done = bg, (b + 1) * block_txs
    finally:
        db.close()
    written = compaction_bytes(path / "LOG")
    total = blocks * block_txs
    return {"transfers": total, "background_cpu_s": round(thread_cpu_s()[1], 1),
            "background_us_per_transfer_by_part": per_part,
            "compaction_bytes_per_transfer": round(sum(written.values()) / max(total, 1), 1),
            "compaction_bytes_per_transfer_by_level": {level: round(count / max(total, 1), 1)
                                                       for level, count in sorted(written.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.bench.compaction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=2_000_000, metavar="N")
    parser.add_argument("--block-txs", type=int, default=2_000, metavar="B", help="transfers a block (2,000)")
    parser.add_argument("--epoch-txs", type=int, default=1 << 17, metavar="E",
                        help="index epoch length in transfers, 0 for no epochs (default 131,072, the node's)")
    parser.add_argument("--absent-reads", type=int, default=1, metavar="R",
                        help="reads of each new account before its block (default 1)")
    parser.add_argument("--sequential-accounts", action="store_true", help="new accounts' keys in order")
    parser.add_argument("--dir", type=Path, help="where the database goes (default a temporary directory)")
    args = parser.parse_args(argv)
    if args.transactions < args.block_txs or args.block_txs < 1 or args.epoch_txs < 0 or args.absent_reads < 0:
        parser.error("--transactions must be at least --block-txs >= 1; --epoch-txs and --absent-reads >= 0")
    path = args.dir or Path(tempfile.mkdtemp(prefix="ledgerd-compaction-"))
    if args.dir is not None and path.exists():
        parser.error(f"{path} exists: give --dir a new directory")
    try:
        result = replay(path / "db" if args.dir is None else path, args.transactions, args.block_txs,
                        args.epoch_txs, args.absent_reads, args.sequential_accounts)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
