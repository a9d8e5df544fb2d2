"""The ledger domain, pure and deterministic.

Owns: canonical encoding, Ed25519 keys and signatures, transaction and block types, Merkle trees
and proofs, genesis, and the state machine that applies a block's transactions to state.

Must not import: anything else of ours (consensus, storage, p2p, node), nor asyncio, sockets,
plyvel, the clock or global randomness. Every function here gives the same output for the same
input on every node, because the nodes compare hashes of what it produces.
"""
