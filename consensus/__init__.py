"""Consensus engines as pure, synchronous state machines (sans-I/O).

Owns: the engine interface (`consensus.api`), the PBFT-family BFT engine and the Raft engine,
their wire messages and commit certificates, and certificate verification for block sync.

Must not import: asyncio, aiohttp, plyvel, sockets, threads, the clock or global `random`; of our
packages only `ledger`. The runtime in `node/` (and the simulator in `tests/sim/`) is the only
thing that does I/O; engines just turn events into actions.

The contract (see `consensus.api` for the types):

- `engine.step(event) -> list[Action]`. Events: `Tick`, `Received(sender, data)`, `TxsAvailable`,
  `ProposalBuilt(height, round, block)`, `ChainAdvanced(tip, proposers)`.
- An engine is built from an `EngineContext`, which includes the proposers of the last committed
  blocks (as many as `factory.history_blocks` says): the BFT engine's round-0 proposer schedule
  reads them, and must read on every node what the committed chain says, not what a node saw.
- Actions are executed by the caller strictly in list order. `Persist` must be durable
  (fsync) before any later action in the same list is executed: that is how a validator avoids
  signing two different things for one (height, round, kind) across a crash.
- `BuildProposal(height, round, parent)` asks the caller for a block on top of `parent`; the answer
  comes back as a `ProposalBuilt` event (its block may be None when there is nothing to propose).
- `Commit(block, certificate)`: the block is final. The caller stores block and certificate
  atomically and must not feed further events until it has done so.
- Time is `Tick` events only; randomness comes from the `random.Random` passed in.
- Bad input from peers is dropped and counted in `engine.counters`, never raised.
"""
