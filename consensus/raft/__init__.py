"""Raft: the crash-fault-tolerant engine, for clusters where one operator runs every node.

Owns: the Raft state machine (`engine.RaftEngine`, the `consensus.api` step interface), its log
and durable records (`log`), its wire messages (`messages`), its limits (`config`) and its commit
certificate (`certificate`). Imports only `consensus.api` and `ledger`; no I/O, clock or global
randomness (timeouts are ticks, randomized from the injected `random.Random`).

Fault model, plainly: Raft survives nodes that crash and restart (with their disk), and a network
that delays, drops, duplicates, reorders and partitions messages. It does NOT survive a node that
lies: a faulty leader can commit anything. Every validator must be run by the same trusted party.

What a committed block carries: `{"engine": "raft", "term", "leader", "signature"}`, the signature
of the leader that committed it, over (chain_id, height, block hash, term). `verify_certificate`
checks that a validator made that statement. It does NOT show that a majority stored the block, nor
that the signer was really the elected leader, nor protect against a dishonest leader; it is an
attributable statement by one trusted node, where a PBFT certificate is a quorum proof.

Validator-set changes: the set of each height comes from `EngineContext.validators_at` (fixed by
the state committed two heights below); the entry of height h commits on a majority of h's set,
elections count the set of the candidate's election height, a node outside the set follows as a
learner, and a removed leader steps down. The rules and their safety argument: the engine's
"validator set of a height" notes and docs/validators.md ("Raft: membership changes").

Operational notes for the runtime:
- Only the leader proposes (`BuildProposal` with `round` = the Raft term); `status()["leader"]`
  names it so that followers can forward transactions to it.
- A follower that the leader can no longer repair from its log (it retains
  `RaftLimits.retained_entries` committed blocks) gets a sync hint and reports
  `status()["needs_sync"] = H`: fetch committed blocks up to at least H, then feed `ChainAdvanced`.
- An AppendEntries frame is at most about one block plus `RaftLimits.max_append_bytes`.
"""

from consensus.raft.certificate import verify_certificate
from consensus.raft.config import RaftLimits
from consensus.raft.engine import RaftEngine, Role
from consensus.raft.log import RaftInvariantError, RaftStateError

__all__ = ["RaftEngine", "RaftInvariantError", "RaftLimits", "RaftStateError", "Role", "verify_certificate"]
