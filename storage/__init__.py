"""The node's database: one LevelDB (plyvel) per node.

Owns: the on-disk layout (order-preserving byte keys), the committed chain (blocks, commit
certificates, receipts, tx index), the committed state (accounts, assets, records), the chain's
identity (chain id, genesis hash), the head marker, and the consensus engine's durable records.

The contract it keeps (GUIDE section 5):
- each committed block is one `write_batch(transaction=True, sync=True)`: block, certificate,
  receipts, tx index, state writes and the new head; a crash leaves the old head or the new one;
- engine records are written with sync=True in their own namespace before the runtime lets any
  message that depends on them leave the node;
- a database that is corrupt, locked by another process or belongs to another chain refuses to
  open with a `StorageError` whose message is one clear line; a failed durable write raises
  `StorageError` too, and the node halts on it.

May import `ledger` and `consensus.api` (for `ChainTip`); must not import `node`, `p2p`, asyncio or
the clock.
"""

from storage.store import StorageError, Store

__all__ = ["StorageError", "Store"]
