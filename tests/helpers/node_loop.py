"""A node process that commits transactions as fast as it can, printing each committed height.

For the crash tests: the parent kills it with SIGKILL at an arbitrary moment, then reopens the
home. Usage: python -m tests.helpers.node_loop HOME  (accounts are read from HOME/../accounts; the
last one is left alone, for the parent to use after a restart).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ledger import keys
from node.node import Node
from tests.helpers.nodes import pay

BATCH = 20


async def main(home: Path) -> None:
    accounts = sorted((home.parent / "accounts").glob("account*.pem"))
    senders = [keys.PrivateKey.load(p) for p in accounts[:-1]]
    node = Node.open(home, {"tick_ms": 10}, environ={})
    await node.start()
    print(f"start {node.height}", flush=True)
    round_ = 0
    while True:
        txs = []
        for i, sender in enumerate(senders):
            nonce = node.service.account(sender.address)["nonce"]
            to = senders[(i + 1 + round_) % len(senders)]
            txs += [pay(sender, nonce + k, to, 1 + (round_ + k) % 9) for k in range(BATCH)]
        outcomes = await node.service.submit([tx.to_json() for tx in txs])
        assert all(o.accepted for o in outcomes), {o.code for o in outcomes}
        status = await node.service.wait_committed(txs[-1].hash, 30)
        assert status is not None and status.status == "committed", status
        print(f"committed {node.height}", flush=True)
        round_ += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
