"""The daemon: one ledgerd node, built from rooms that each own one role.

    node.core   the node's decisions, deterministic and synchronous (NodeCore, mempool, executor)
    node.net    the node's use of p2p (peer network, tx gossip, block sync)
    node.api    HTTP (REST, OpenAPI, event stream), through `node.service.NodeService` only
    node.node   the composition root: builds every part, wires them, starts and stops them in order
    node.runtime, node.sigworkers   the asyncio driver of the core; signature worker processes
    node.config, node.metrics, node.logs, node.service   shared leaf modules

May import `ledger`, `consensus`, `storage` and `p2p`; never `cli`. No module-level state: every
object is built by the composition root and passed in, so many nodes can run in one process. The
import rules between the rooms are in docs/architecture.md and checked by
tests/unit/test_architecture.py.
"""
