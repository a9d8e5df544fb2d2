"""The node's database: `Store` over a small storage interface (LevelDB in production, an in-memory
disk that models durability in simulation and tests).

Owns: the on-disk layout (order-preserving byte keys), the committed chain (blocks, commit
certificates, receipts, tx index), the committed state (accounts, assets, records), the chain's
identity (chain id, genesis hash), the head marker, and the consensus engine's durable records.

The parts:
- `storage.backend`: the interface `Store` is written against (`KeyValueStore`: get, ordered scan,
  atomic `write(WriteBatch, sync=...)`, close) and nothing else `Store` may use;
- `storage.plyvel_backend`: `PlyvelBackend`, one LevelDB directory through plyvel, the only module
  that imports plyvel;
- `storage.memory`: `MemoryDisk` (durable vs not-yet-synced records, `crash()`, armed faults) and
  `MemoryBackend`, a handle on it;
- `storage.store`: `Store`, the layout and the contract below;
- `storage.indexes`: the transaction indexes (by hash, by account) and blocks by hash, their keys
  partitioned in epochs of the chain so that LevelDB's compaction does not grow with the chain;
- `storage.presence`: the Bloom filter of existing state keys through which the state view answers
  reads of absent keys without asking LevelDB (whose early compactions those reads would trigger);
- `storage.errors`: `StorageError` (for the node) and `DiskError` (between a backend and `Store`).

The contract `Store` keeps, on either backend:
- each committed block is one atomic synced write: block, certificate, receipts, tx index, state
  writes and the new head; a crash leaves the old head or the new one;
- engine records are written with sync=True in their own namespace before the runtime lets any
  message that depends on them leave the node;
- a database that is corrupt, locked by another handle or belongs to another chain refuses to
  open with a `StorageError` whose message is one clear line; a failed read or durable write raises
  `StorageError` too (never a backend's own exception), and the node halts on it; the head moves
  only after its block is durable.

May import `ledger` and `consensus.api` (for `ChainTip`), and plyvel in `storage.plyvel_backend`
only; must not import `node`, `p2p`, asyncio, the clock or global randomness. No module-level
mutable state: one process holds as many stores as a test or simulation has nodes.
"""

from storage.backend import KeyValueStore, WriteBatch
from storage.errors import DiskError, StorageError
from storage.memory import DiskFaults, MemoryBackend, MemoryDisk
from storage.plyvel_backend import PlyvelBackend
from storage.store import Store

__all__ = [
    "DiskError",
    "DiskFaults",
    "KeyValueStore",
    "MemoryBackend",
    "MemoryDisk",
    "PlyvelBackend",
    "StorageError",
    "Store",
    "WriteBatch",
]
