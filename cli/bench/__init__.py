"""`ledgerd bench`: a load generator for a running cluster, with a progress line and a final report.

Split by concern: `setup` funds fresh accounts and pre-signs every transaction before the clock starts
(client signing is not what is measured); `load` submits them open-loop (a fixed rate) or closed-loop
(as fast as the cluster takes them) and follows the commit events; `stats` turns the timings and the
nodes' /proc counters into figures; `report` prints the table and the one JSON line.
Around it, for scripts/bench-sweep and scripts/bench-etcd: `sweep` labels each run's JSON line and
records the commit and machine, `etcd` reads etcd's own benchmark output, `plot` writes the summary
and the plots.
"""
