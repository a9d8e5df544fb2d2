"""The `ledgerd` command line: every command a person runs, and the tools behind them.

Owns: argument parsing and dispatch (`cli.main`), `ledgerd start` (`cli.start`: builds a `Node`,
serves its API, stops it on a signal), `localnet` (child processes), `testnet` (writes homes and
keys), the HTTP client the `tx`/`status` commands use (`cli.client`) and the load generator
(`cli.bench`).

May import everything of ours; nothing of ours imports `cli`.
"""
