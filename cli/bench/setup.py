"""Before the clock starts: fund K fresh accounts from a testnet's funded keys and pre-sign the load.

Each fresh account is funded by one transfer from a funded key (round-robin), all sent in one batch
and waited for until committed. The load is then signed up front: transaction i is account i mod K's
next nonce, a transfer of 1 LDG to the next account, so each account's nonces are sequential and
every account's balance stays far above what it spends. With `fresh` recipients every transfer goes
to an address never used before instead, so the state (and the account index) grows by one account
a transaction.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cli.client import ClientError, LedgerClient
from ledger import keys
from ledger.errors import Rejected
from ledger.tx import Transfer, sign_tx

FUND_TIMEOUT_S = 60.0
FUND_POLL_S = 0.2
FUND_MARGIN = 1000  # LDG beyond what an account spends, so fees or rounding never starve it
TRANSFER_AMOUNT = 1
NATIVE_ASSET = "LDG"


class BenchError(Exception):
    """A failure the user can act on (no funded keys, a node that refuses, a funding timeout)."""


@dataclass(frozen=True)
class SignedTx:
    hash: str
    sender_index: int  # which bench account sent it: the account decides the node it goes to
    body: bytes  # the transaction's JSON, ready to be joined into a batch


def load_funded_keys(directory: Path) -> list[keys.PrivateKey]:
    files = sorted(directory.glob("*.pem")) if directory.is_dir() else []
    if not files:
        raise BenchError(f"no funded account keys (*.pem) in {directory}; pass --keys DIR/accounts of a "
                         "testnet written by `ledgerd testnet` or `ledgerd localnet`")
    try:
        return [keys.PrivateKey.load(f) for f in files]
    except Rejected as exc:
        raise BenchError(exc.message) from None


def fund_accounts(client: LedgerClient, chain_id: str, funders: list[keys.PrivateKey], count: int,
                  amount: int) -> list[keys.PrivateKey]:
    """K fresh keys, each holding `amount` LDG once this returns (raises BenchError otherwise)."""
    fresh = [keys.PrivateKey.generate() for _ in range(count)]
    nonces = {f.address: int(client.account(f.address)["nonce"]) for f in funders}
    txs = []
    for i, account in enumerate(fresh):
        funder = funders[i % len(funders)]
        txs.append(sign_tx(funder, chain_id, nonces[funder.address],
                           Transfer(account.address, NATIVE_ASSET, amount)))
        nonces[funder.address] += 1
    # One request per funder's run of nonces keeps each sender's transactions in order.
    pending: set[str] = set()
    for start in range(0, len(txs), 500):
        chunk = txs[start:start + 500]
        answers = client.request("POST", "/v1/transactions", [t.to_json() for t in chunk])
        for tx, answer in zip(chunk, answers, strict=True):
            if answer.get("status") != "pending":
                error = answer.get("error") or {}
                raise BenchError(f"the node refused a funding transfer: {error.get('code')}: "
                                 f"{error.get('message')}")
            pending.add(tx.hash)
    deadline = time.monotonic() + FUND_TIMEOUT_S
    while pending:
        for tx_hash in list(pending):
            try:
                status = client.transaction(tx_hash)
            except ClientError:
                continue
            if status.get("status") == "committed":
                pending.discard(tx_hash)
            elif status.get("status") == "failed":
                raise BenchError(f"funding transfer {tx_hash} failed: {status.get('result')}")
        if pending and time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} funding transfers did not commit within {FUND_TIMEOUT_S:g}s")
        if pending:
            time.sleep(FUND_POLL_S)
    return fresh


def fresh_address(salt: bytes, index: int) -> str:
    """The `index`th address of a run's fresh recipients: 32 bytes derived from the run's random
    `salt`, so no two transfers (nor two runs) share one. Nobody holds its key; it only receives."""
    return hashlib.blake2b(index.to_bytes(8, "big"), digest_size=32, key=salt).hexdigest()


def new_salt() -> bytes:
    return os.urandom(16)


def signed_transfers(accounts: list[keys.PrivateKey], chain_id: str, start: int, stop: int,
                     fresh_salt: bytes | None = None) -> Iterator[SignedTx]:
    """Transfers `start` .. `stop`-1 of a load spread round-robin over `accounts`, nonces from 0 in
    each account (transfer i is account i mod K's nonce i // K); to the next account, or with
    `fresh_salt` to fresh address i. A load can be signed in chunks: the same i gives the same transfer."""
    count = len(accounts)
    for i in range(start, stop):
        sender = i % count
        nonce = i // count
        to = accounts[(sender + 1) % count].address if fresh_salt is None else fresh_address(fresh_salt, i)
        tx = sign_tx(accounts[sender], chain_id, nonce, Transfer(to, NATIVE_ASSET, TRANSFER_AMOUNT))
        body = tx.encode()  # canonical JSON, as ledgerd's own client sends it
        yield SignedTx(tx.hash, sender, body)


def presign(accounts: list[keys.PrivateKey], chain_id: str, total: int, fresh: bool = False) -> list[SignedTx]:
    """`total` transfers spread round-robin over `accounts`, nonces from 0 in each account; with
    `fresh`, each to an address never used before."""
    return list(signed_transfers(accounts, chain_id, 0, total, new_salt() if fresh else None))
