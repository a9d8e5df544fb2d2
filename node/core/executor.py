"""Block building and checking against this node's committed state.

`BlockExecutor` is the `consensus.api.BlockChecker` the engine is given, and the builder that
answers the engine's `BuildProposal`. Executing a block is the expensive part of both, so the
`Execution` of every block it built or checked is kept by block hash until that height commits:
committing a block this node already checked executes nothing again.

Signatures are verified once per node: a transaction this node's mempool admitted (with the same
signature) is not verified again when it shows up in a block, and one first met in a block is
noted with the mempool, so its later arrival by gossip is not verified again either.

An idle chain stays quiet (no transactions, no block), except while a decided validator-set change
waits for its activation height (`ledger.valset`): the heights up to it are then proposed even
empty, so that a change decided on an idle chain takes effect at once (its activation block is the
first the new set decides) rather than at the next traffic.

Every block built here is a version-2 block: its header commits to the receipts (the results) of
its transactions, which is what lets a proof show a transaction's result. A proposal must be
version 2 and its receipts root must be the one this node's execution produces; a version-1 block
is accepted only from block sync (a final block of a chain's history from before version 2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.api import ChainTip
from ledger import valset
from ledger.block import CURRENT_HEADER_VERSION, Block, make_block, receipts_root_hex
from ledger.errors import Rejected
from ledger.state import Execution, ParseMemo, StateOverlay, execute
from node.core.mempool import Mempool
from storage import Store

MAX_CACHED_EXECUTIONS = 16


@dataclass(frozen=True)
class BuildLimits:
    max_block_txs: int = 2000
    max_block_bytes: int = 4 * 1024 * 1024
    max_block_time_drift_ms: int = 10_000
    # BFT: after a round change an empty proposal is what ends it. Raft must not get one: its term
    # is passed as the round, and an empty block per request would spin.
    empty_block_after_round_0: bool = True


class BlockExecutor:
    """Checks proposals and builds them, on top of the store's committed head only."""

    def __init__(self, store: Store, mempool: Mempool, proposer: str, validators: tuple[str, ...],
                 limits: BuildLimits, clock_ms: Callable[[], int], memo: ParseMemo | None = None,
                 validators_at: Callable[[int], Sequence[str]] | None = None) -> None:
        self._store = store
        self._memo = memo
        self._mempool = mempool
        self._proposer = proposer
        self._validators = frozenset(validators)
        # The set in force at a height (default: `validators` at every height).
        self._validators_at = validators_at
        self.limits = limits
        self._clock_ms = clock_ms
        # block hash -> (execution, the signatures checked): a block hash does not cover signatures.
        self._executions: OrderedDict[str, tuple[Execution, tuple[bytes, ...]]] = OrderedDict()
        self.signatures_verified = 0  # counted for tests and metrics: verification is the hot path

    # --- BlockChecker -----------------------------------------------------------------------

    def check_block(self, block: Block, parent: ChainTip, *, synced: bool = False) -> str | None:
        """None when `block` validly extends `parent` (which must be the committed head).

        `synced`: a final block fetched by block sync, whose certificate and transaction signatures
        the syncer has already verified. Its timestamp is not compared with the local clock (a
        final block stays valid however late it arrives) and signatures are not checked twice;
        the link, nonces, execution and app_hash are checked as for any proposal.
        """
        header = block.header
        tip = self._store.tip
        if parent.height != tip.height or parent.block_hash != tip.block_hash:
            return f"parent {parent.height} is not this node's committed head {tip.height}"
        if header.chain_id != self._store.chain_id:
            return f"block is for chain {header.chain_id!r}"
        if header.height != parent.height + 1:
            return f"block height {header.height} does not follow the parent height {parent.height}"
        if header.prev_hash != parent.block_hash:
            return "block prev_hash is not the parent's hash"
        in_force = self._validators if self._validators_at is None else self._validators_at(header.height)
        if header.proposer not in in_force:
            return "block proposer is not a validator"
        if header.timestamp <= parent.timestamp:
            return "block timestamp is not after its parent's"
        now = self._clock_ms()
        if not synced and header.timestamp > now + self.limits.max_block_time_drift_ms:
            return f"block timestamp is {header.timestamp - now} ms ahead of this node's clock"
        if not synced and header.version != CURRENT_HEADER_VERSION:
            return f"block header version {header.version} is not {CURRENT_HEADER_VERSION}, the version proposed now"
        cached = self._executions.get(block.hash)
        if cached is not None and cached[1] == tuple(tx.signature for tx in block.txs):
            return None
        for index, tx in enumerate(block.txs):
            if not synced and not self._mempool.is_verified(tx):
                self.signatures_verified += 1
                if not tx.signature_valid():
                    return f"transaction {index} ({tx.hash}) has an invalid signature"
                self._mempool.note_verified(tx)
        try:
            execution = execute(self._store.state, header.chain_id, header.height, block.txs, parent.app_hash,
                                self._memo)
        except Rejected as exc:
            return exc.message
        if execution.app_hash != header.app_hash:
            return "block app_hash does not match the state its transactions produce"
        if header.version >= 2 and header.receipts_root != _receipts_root(block, execution):
            return "block receipts_root does not match the results its transactions produce"
        self._remember(block, execution)
        return None

    # --- proposals --------------------------------------------------------------------------

    def build_proposal(self, height: int, round: int, parent: ChainTip) -> Block | None:
        """A block of ready mempool transactions on top of `parent`.

        With nothing to propose: None in round 0 (an idle chain stays quiet), but an empty block in
        a later round when `empty_block_after_round_0` (BFT: a proposal is what ends a round change).
        """
        tip = self._store.tip
        if parent.height != tip.height or parent.block_hash != tip.block_hash or height != tip.height + 1:
            return None
        txs = tuple(self._mempool.reap(self.limits.max_block_txs, self.limits.max_block_bytes))
        if not txs and (round == 0 or not self.limits.empty_block_after_round_0) \
                and not self.activation_ahead(height):
            return None
        execution = execute(self._store.state, self._store.chain_id, height, txs, parent.app_hash, self._memo)
        timestamp = max(self._clock_ms(), parent.timestamp + 1)
        block = make_block(self._store.chain_id, height, parent.block_hash, timestamp, self._proposer, txs,
                           execution.app_hash, execution.receipts)
        self._remember(block, execution)
        return block

    def activation_ahead(self, height: int) -> bool:
        """True when a decided validator-set change is not yet in force at the committed head and
        comes into force at `height` or later: block `height` is worth proposing even empty, up to
        the activation height's block, the first one the new set decides (read from committed
        state: the same answer on every node)."""
        pending = valset.pending_change(StateOverlay(self._store.state, self._store.chain_id))
        return pending is not None and height <= int(pending["effective_height"])

    # --- committing -------------------------------------------------------------------------

    def execution_for(self, block: Block) -> Execution:
        """The execution of a block about to be committed on the head (cached if checked or built).

        Raises Rejected if the block does not execute on the head: a committed block that this
        node cannot execute means the node's state has diverged, and it must halt.
        """
        cached = self._executions.get(block.hash)
        if cached is not None:
            return cached[0]
        tip = self._store.tip
        if block.header.prev_hash != tip.block_hash or block.height != tip.height + 1:
            raise Rejected("invalid_block",
                           f"committed block {block.height} does not extend the head {tip.height}")
        execution = execute(self._store.state, self._store.chain_id, block.height, block.txs, tip.app_hash,
                            self._memo)
        if execution.app_hash != block.header.app_hash:
            raise Rejected("invalid_block",
                           f"committed block {block.height} has an app_hash this node's state cannot produce")
        if block.header.version >= 2 and block.header.receipts_root != _receipts_root(block, execution):
            raise Rejected("invalid_block",
                           f"committed block {block.height} has a receipts_root this node's execution cannot produce")
        return execution

    def on_committed(self, block: Block) -> None:
        """Forget cached executions: every one of them was computed on a head that is gone now."""
        self._executions.clear()

    def _remember(self, block: Block, execution: Execution) -> None:
        self._executions[block.hash] = (execution, tuple(tx.signature for tx in block.txs))
        while len(self._executions) > MAX_CACHED_EXECUTIONS:
            self._executions.popitem(last=False)


def _receipts_root(block: Block, execution: Execution) -> str:
    return receipts_root_hex([tx.hash for tx in block.txs], [r.encode() for r in execution.receipts])
