"""The node's use of the network: peers, transaction gossip, and block sync's transport.

Owns: `PeerNetwork` (the p2p listener and a link to every peer, topic channels for consensus,
gossip, status and sync), `TxBatcher` (gossip batching), `BlockSync` (who is ahead, fetching and
verifying certified blocks from peers, penalties). Blocks it fetches are applied by the node core.

May import `ledger`, `consensus`, `storage`, `p2p`, `node.core` (the types it hands blocks to) and
the node's shared modules; never `node.api`, `node.node` or `cli`.
"""
