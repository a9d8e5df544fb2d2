"""A process that commits blocks to a Store as fast as it can, printing each committed height.

Used by the crash tests: the parent kills it with SIGKILL at an arbitrary moment and checks that
the database reopens consistent. Usage: python -m tests.helpers.commit_loop DB_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from ledger.state import account_key, decode_account
from storage import Store
from tests.helpers.chain import certificate_for, key, make_genesis, next_block, transfer

VALIDATOR = key(0, b"node")
ACCOUNTS = [key(i) for i in range(4)]
GENESIS = make_genesis([VALIDATOR], ACCOUNTS, amount=10_000_000)


def main(db_dir: str) -> None:
    store = Store.open(Path(db_dir), GENESIS)
    nonces = {a.address: decode_account(store.state.get(account_key(a.address))).nonce for a in ACCOUNTS}
    print(f"start {store.tip.height}", flush=True)
    while True:
        height = store.tip.height + 1
        txs = []
        for i, sender in enumerate(ACCOUNTS):
            to = ACCOUNTS[(i + height) % len(ACCOUNTS)]
            txs.append(transfer(sender, nonces[sender.address], to, amount=1 + (height * 7 + i) % 50))
            nonces[sender.address] += 1
        block, execution = next_block(store, txs, VALIDATOR.address)
        store.save_block(block, certificate_for(block), execution)
        print(f"committed {block.height}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
