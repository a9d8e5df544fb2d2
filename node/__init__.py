"""The daemon: the composition root that wires ledger, consensus, storage and p2p together.

Owns: configuration, the runtime loop that drives the consensus engine, the mempool, the REST API
and WebSocket event stream, metrics, logging and the `ledgerd` CLI.

May import every other package of ours; nothing imports `node`. No module-level state: every
object is built by the composition root and passed in, so many nodes can run in one process.
"""
