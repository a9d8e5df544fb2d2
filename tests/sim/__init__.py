"""Deterministic simulation of the consensus engines (GUIDE section 4).

One seed drives everything: a cluster of N engines, a network that delays, drops, duplicates,
reorders and partitions messages, crash-restarts that lose whatever was not persisted, and, for
engines that tolerate them, up to f Byzantine validators. Checkers run on every commit and every
signed message; a liveness phase then heals the network and requires progress within a bound.

    ./scripts/simulate --engine pbft --nodes 4 --seeds 0-999      # a range, one summary line
    ./scripts/simulate --engine pbft --nodes 4 --seed 17 --trace  # replay one seed, readable
    ./scripts/simulate --engine pbft --nodes 7 --harsh --seeds 0-99 --counters --jobs 2

Modules: `world` (the cluster, faults and checkers), `runner` (seeds, CLI), `engines` (the
registry), `byzantine` (the BFT adversary), `broken` (engines that must fail), `crypto` (fast
HMAC signatures standing in for Ed25519).

Adding an engine (the extension point): register an `EngineSpec` under its genesis name in
`tests/sim/engines.py` ENGINES, e.g. for Raft

    "raft": EngineSpec("raft", RaftEngine, raft_verify_certificate,
                       max_faulty=lambda n: (n - 1) // 2, describe=describe_raft),

`describe` turns one of the engine's wire messages into a `MessageInfo` (signer, the slot in
which an honest node signs at most one content, e.g. ("vote", term), and a trace line); leave
`adversary` None and the simulator applies crash and network faults only, with f crashed
nodes allowed in the liveness phase. Then add a test beside test_sim_pbft.py that runs it.
"""
