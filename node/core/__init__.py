"""The node's decisions, deterministic and synchronous: no asyncio, no clock, no sockets.

Owns: `NodeCore` (feeds events to the consensus engine and executes its actions in order: persist,
send, build a proposal, commit; admits submissions into the mempool; applies blocks that block
sync fetched), and the types it answers with.

Time, the network (a `Transport`), storage (a `storage.Store`) and the commit listener are handed
in, so the same object runs inside the daemon (driven by `node.runtime.Runtime`, an asyncio loop)
and inside the simulator (driven tick by tick, many nodes in one process).

May import: `ledger`, `consensus`, `storage`, and the node modules it is built from (mempool,
executor, metrics, service types). Must not import asyncio, aiohttp, p2p, the HTTP API or the CLI.
"""

from node.core.machine import CommittedBlock, CoreListener, NodeCore, SyncOutcome, Transport

__all__ = ["CommittedBlock", "CoreListener", "NodeCore", "SyncOutcome", "Transport"]
