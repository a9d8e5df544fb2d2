"""What each stage of a transaction's way through one validator costs, against one signature check.

    python -m cli.bench.stages [--blocks B] [--block-txs T]

The ceilings of docs/benchmarks.md count only Ed25519 verifications: a validator of a PBFT cluster,
or a node replaying the chain, checks each transaction's signature once. Reaching a share S of such
a ceiling leaves a node (1 / S - 1) verifications' worth of CPU per transaction for everything else:
at 60%, two thirds of one verification. This runs the node's own code for those other stages, in
this process and without the network, consensus messages or HTTP, over B blocks of T transfers
between 200 funded accounts on a real LevelDB store (the node's options), and reports the CPU of
each per transaction (`time.process_time`: LevelDB's own threads count too), so that what the
stages alone take can be set against that allowance:

    verify      one Ed25519 signature check (`ledger.keys.verify`, libsodium), as the ceiling's
                calibration (`cli.bench.ceiling`) times it: the ceiling's unit
    decode      a transaction met for the first time: its canonical bytes to a Transaction (gossip
                intake, a synced block)
    admit       the mempool's checks and bookkeeping of a verified transaction (nonce, funds)
    build       the proposer: reap the mempool, execute, the block with its Merkle roots
    check       a replica (or block sync): execute a block it did not build, check app hash and
                receipts root
    record      the engine's prepared-block record (one synced write of the block)
    commit      the block, its receipts and indexes and the new state in one synced batch, then the
                mempool told
    encode      a block's canonical bytes (what a proposal and a sync answer carry)

A PBFT replica pays decode, admit, check, record and commit for each transaction (the proposer
build instead of check); a node in block sync pays decode, check and commit. Prints a table and one
JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cli.bench.report import json_line
from ledger import keys
from ledger.block import Block
from ledger.genesis import Genesis, Validator
from ledger.state import Execution
from ledger.tx import Transaction, Transfer, decode_canonical_array, sign_tx
from node.core.executor import BlockExecutor, BuildLimits
from node.core.mempool import Mempool, MempoolLimits
from storage import Store

CHAIN_ID = "ledger-stages"
SENDERS = 200
GENESIS_MS = 1_700_000_000_000
STAGES = ("verify", "decode", "admit", "build", "check", "record", "commit", "encode")
REPLICA = ("decode", "admit", "check", "record", "commit")
SYNC = ("decode", "check", "commit")


def _key(tag: bytes, i: int) -> keys.PrivateKey:
    return keys.PrivateKey.from_seed((tag + i.to_bytes(4, "big")).ljust(32, b"\x00"))


class Clock:
    def __init__(self) -> None:
        self.ms = GENESIS_MS + 1

    def __call__(self) -> int:
        self.ms += 1
        return self.ms


class Stopwatch:
    """CPU seconds of this process (every thread) spent inside `timed()`, per stage."""

    def __init__(self) -> None:
        self.cpu_s = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.cpu_s[stage] += time.process_time() - start


def signed_blocks(senders: list[keys.PrivateKey], blocks: int, block_txs: int) -> list[list[Transaction]]:
    """`blocks` lists of `block_txs` transfers, each sender's nonces in order, to fresh recipients."""
    out: list[list[Transaction]] = []
    nonces = [0] * len(senders)
    for b in range(blocks):
        txs = []
        for i in range(block_txs):
            s = (b * block_txs + i) % len(senders)
            to = hashlib.sha256(b"recipient%d" % (b * block_txs + i)).hexdigest()
            txs.append(sign_tx(senders[s], CHAIN_ID, nonces[s], Transfer(to, "LDG", 1)))
            nonces[s] += 1
        out.append(txs)
    return out


def measure(path: Path, blocks: int, block_txs: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    senders = [_key(b"sender", i) for i in range(SENDERS)]
    validators = [_key(b"validator", i) for i in range(4)]
    genesis = Genesis(CHAIN_ID, GENESIS_MS, "pbft",
                      tuple(Validator(v.address, f"node{i}") for i, v in enumerate(validators)),
                      tuple((s.address, 10**12) for s in senders))
    if progress:
        progress(f"signing {blocks} blocks of {block_txs} transfers ...")
    plan = signed_blocks(senders, blocks, block_txs)
    # The proposer's node and a replica's, each with its own store, mempool and executor.
    proposer_store = Store.open(path / "proposer", genesis)
    replica_store = Store.open(path / "replica", genesis)
    try:
        clock = Clock()
        members = tuple(v.address for v in validators)
        proposer_pool = Mempool(proposer_store, CHAIN_ID, MempoolLimits(), time.monotonic)
        replica_pool = Mempool(replica_store, CHAIN_ID, MempoolLimits(), time.monotonic)
        limits = BuildLimits(max_block_txs=block_txs)
        builder = BlockExecutor(proposer_store, proposer_pool, members[0], members, limits, clock)
        checker = BlockExecutor(replica_store, replica_pool, members[1], members, limits, clock)
        watch = Stopwatch()
        for number, planned in enumerate(plan, start=1):
            wire = b"[" + b",".join(tx.encode() for tx in planned) + b"]"
            with watch.timed("verify"):
                for tx in planned:
                    keys.verify(tx.sender, tx.signature, tx.signing_bytes)
            with watch.timed("decode"):
                decoded = decode_canonical_array(wire)
            if decoded is None or [tx.hash for tx in decoded] != [tx.hash for tx in planned]:
                raise RuntimeError("the canonical decoder refused a transfer it encoded")
            with watch.timed("admit"):
                outcomes = replica_pool.add(decoded, [True] * len(decoded))
            proposer_pool.add(planned, [True] * len(planned))
            if not all(o.accepted for o in outcomes):
                raise RuntimeError("the mempool refused a planned transfer")
            with watch.timed("build"):
                block = builder.build_proposal(number, 0, proposer_store.tip)
            if block is None or len(block.txs) != len(planned):
                raise RuntimeError("the proposer built no full block")
            with watch.timed("encode"):
                raw = block.encode()
            with watch.timed("check"):
                verdict = checker.check_block(block, replica_store.tip)
            if verdict is not None:
                raise RuntimeError(f"the replica refused the block: {verdict}")
            certificate = {"height": block.height, "block_hash": block.hash, "signatures": []}
            with watch.timed("record"):
                replica_store.save_engine({"prepared_block": raw}, ())
            with watch.timed("commit"):
                _commit(replica_store, replica_pool, checker, block, certificate)
            _commit(proposer_store, proposer_pool, builder, block, certificate)
            if progress and number % max(1, blocks // 5) == 0:
                progress(f"  {number}/{blocks} blocks")
        heights = (proposer_store.tip.height, replica_store.tip.height)
        same_state = proposer_store.tip.app_hash == replica_store.tip.app_hash
    finally:
        proposer_store.close()
        replica_store.close()
    if heights != (blocks, blocks) or not same_state:
        raise RuntimeError(f"the two stores ended at heights {heights}, app hashes equal: {same_state}")
    txs = blocks * block_txs
    us = {stage: 1e6 * watch.cpu_s[stage] / txs for stage in STAGES}
    verify = us["verify"]
    return {"blocks": blocks, "block_txs": block_txs, "transactions": txs,
            "us_per_tx": {k: round(v, 2) for k, v in us.items()},
            "replica_us_per_tx": round(sum(us[s] for s in REPLICA), 2),
            "sync_us_per_tx": round(sum(us[s] for s in SYNC), 2),
            "replica_in_verifications": round(sum(us[s] for s in REPLICA) / verify, 3),
            "sync_in_verifications": round(sum(us[s] for s in SYNC) / verify, 3),
            "allowance_at_60pct_us": round(verify * (1 / 0.6 - 1), 2)}


def _commit(store: Store, pool: Mempool, executor: BlockExecutor, block: Block, certificate: dict[str, Any]) -> None:
    execution: Execution = executor.execution_for(block)
    store.save_block(block, certificate, execution)
    executor.on_committed(block)
    pool.on_committed(block.txs, execution.writes)


def table(r: dict[str, Any]) -> str:
    us = r["us_per_tx"]
    verify = us["verify"]
    lines = [f"{r['transactions']} transfers in {r['blocks']} blocks of {r['block_txs']}, CPU per transaction:",
             f"{'stage':<8} {'us/tx':>8} {'x verify':>9}"]
    lines += [f"{s:<8} {us[s]:>8.2f} {us[s] / verify:>9.3f}" for s in STAGES]
    lines.append(f"PBFT replica without the verify ({' + '.join(REPLICA)}): {r['replica_us_per_tx']:.2f} us "
                 f"= {r['replica_in_verifications']:.2f} verifications")
    lines.append(f"block sync without the verify ({' + '.join(SYNC)}): {r['sync_us_per_tx']:.2f} us "
                 f"= {r['sync_in_verifications']:.2f} verifications")
    lines.append(f"left for all of it at 60% of a verification ceiling: {r['allowance_at_60pct_us']:.2f} us "
                 "= 0.67 verifications")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.bench.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20, metavar="B", help="blocks (default 20)")
    parser.add_argument("--block-txs", type=int, default=2000, metavar="T",
                        help="transfers per block (default 2000, the node's largest block)")
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.block_txs < 1:
        parser.error("--blocks and --block-txs must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="ledgerd-stages."))
    try:
        result = measure(root, args.blocks, args.block_txs, progress=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(result))
    print(json_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
