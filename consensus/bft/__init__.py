"""The PBFT-family engine (QBFT / IBFT 2.0 style): n = 3f + 1 validators, immediate finality.

Owns: the BFT state machine (`engine`), its wire messages and signing bytes (`messages`), the
round-change justification rules (`justification`), the commit certificate stored with every
block and its verification (`certificate`), the crash-safe hard state (`hardstate`), and the
validator-set arithmetic with the proposer schedule (`rounds`: round 0 skips validators the
committed headers show absent; `EngineContext.recent_proposers` and `ChainAdvanced.proposers`
feed it).

Must not import: asyncio, aiohttp, plyvel, sockets, threads, the clock or global `random`; of our
packages only `ledger` and `consensus.api`. Peers' bytes are untrusted: whatever is malformed,
wrongly signed, from a non-validator, for another chain, stale, duplicated or too far ahead is
dropped and counted in `engine.counters` (keys `dropped_<reason>`), never raised.
"""

from consensus.bft.certificate import verify_certificate
from consensus.bft.engine import BftEngine, BftLimits
from consensus.bft.messages import carried_block

__all__ = ["BftEngine", "BftLimits", "carried_block", "verify_certificate"]
