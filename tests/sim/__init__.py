"""Deterministic simulation of the node: the real node core of every validator, in one process.

One seed drives everything: a cluster of N nodes, each the daemon's own parts (`node.core.NodeCore`
driving the consensus engine, a `storage.Store` over an in-memory disk that models durability, the
real mempool and block executor); a network that delays, drops, duplicates, reorders and
partitions messages; crash-restarts that lose whatever was not synced, some halfway through an
action list; disk faults (a failed write, sync or read: the node must halt); and, for engines that
tolerate them, up to f Byzantine validators. Checkers run on every acknowledged commit, every
restart and every signed message; a liveness phase then heals the network and requires commits by
consensus (counted apart from block sync) within a bound.

    ./scripts/simulate --engine pbft --nodes 4 --seeds 0-999      # a range, one summary line
    ./scripts/simulate --engine pbft --nodes 4 --seed 17 --trace  # replay one seed, readable
    ./scripts/simulate --engine pbft --nodes 7 --harsh --seeds 0-99 --counters --jobs 2
    ./scripts/simulate --engine pbft --nodes 4 --scenario one-down --seeds 0-9  # see world's doc
    ./scripts/simulate --engine pbft --nodes 4 --valset --seeds 0-999  # validator-set changes too

`--valset` is a profile of its own, not part of the default mix (so that every existing seed replays
as it did): the genesis gets a committee whose keys the simulator holds, one more node follows the
chain as an observer, and each seed's schedule (`changes`) adds it, removes validators and rotates
keys by real governance transactions during the faults. The summary line counts the changes that
came into force, and says so when the chain refused them (then those seeds ran without changes).
Under Raft the schedules draw no one-step rotation (the chain's rule refuses it: single-server
changes only; `world.rotation_refusal`).

Modules: `world` (the cluster, faults and checkers), `node` (one validator's real parts and the
hooks the simulator keeps on its disk handle and transport), `runner` (seeds, CLI, the crash
storm), `engines` (the registry), `byzantine` (the BFT adversary), `broken` (engines and node parts
that must fail), `changes` (validator-set change schedules and the committee), `crypto` (fast
HMAC signatures standing in for Ed25519 in consensus messages; transactions are real Ed25519-signed
ones).

Adding an engine (the extension point): register an `EngineSpec` under its genesis name in
`tests/sim/engines.py` ENGINES, e.g. for Raft

    "raft": EngineSpec("raft", RaftEngine, raft_verify_certificate,
                       max_faulty=lambda n: (n - 1) // 2, describe=describe_raft, consensus="raft"),

`consensus` is the engine's name in genesis (what the node's factory knows it by); `describe`
turns one of the engine's wire messages into a `MessageInfo` (signer, the slot in which an honest
node signs at most one content, e.g. ("vote", term), and a trace line); leave
`adversary` None and the simulator applies crash and network faults only, with f crashed
nodes allowed in the liveness phase. Then add a test beside test_sim_pbft.py that runs it.
"""
