"""`ledgerd bench`: a load generator for a running cluster, with a progress line and a final report;
and the long benchmarks that drive a localnet of their own.

Split by concern: `setup` funds fresh accounts and pre-signs every transaction before the clock starts
(client signing is not what is measured); `load` submits them open-loop (a fixed rate) or closed-loop
(as fast as the cluster takes them) and follows the commit events; `stats` turns the timings and the
nodes' /proc counters into figures; `ceiling` measures Ed25519 verifications per core and derives the
setup's ceiling; `report` prints the table and the one JSON line. The long benchmarks: `cluster`
starts, stops, wipes and restarts a localnet's nodes; `stream` sends a load signed in chunks by a
worker process and samples the nodes as it goes; `growth` is the arithmetic of its report;
`longhaul` (scripts/bench-longhaul) and `catchup` (scripts/bench --catch-up N) are the two commands.
Around it, for scripts/bench-sweep and scripts/bench-etcd: `sweep` labels each run's JSON line and
records the commit and machine, `etcd` reads etcd's own benchmark output, `plot` writes the summary
and the plots. Without a node: `compaction` replays a node's LevelDB write pattern, and `stages`
times each stage of a transaction's way through a validator against one signature check.
"""
