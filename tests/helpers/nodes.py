"""Single-node homes written by `make_testnet`, and signed transactions for their funded accounts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.testnet import Testnet, make_testnet
from ledger import keys
from ledger.tx import Payload, Transaction, Transfer, sign_tx

CHAIN = "ledger-local"


@dataclass
class Net:
    testnet: Testnet
    accounts: list[keys.PrivateKey]

    @property
    def home(self) -> Path:
        return self.testnet.node_homes[0]


def single_node_net(tmp_path: Path, accounts: int = 3, consensus: str = "pbft") -> Net:
    net = make_testnet(tmp_path / "net", validators=1, accounts=accounts, consensus=consensus)
    return Net(net, [keys.PrivateKey.load(p) for p in net.account_files])


def signed(sender: keys.PrivateKey, nonce: int, payload: Payload) -> Transaction:
    return sign_tx(sender, CHAIN, nonce, payload)


def pay(sender: keys.PrivateKey, nonce: int, to: keys.PrivateKey, amount: int = 1) -> Transaction:
    return signed(sender, nonce, Transfer(to.address, "LDG", amount))


def wire(*txs: Transaction) -> list[dict[str, Any]]:
    """Transactions as a client sends them (parsed JSON)."""
    return [tx.to_json() for tx in txs]
