"""`ledgerd start`: run one node and its REST API in the foreground until SIGINT or SIGTERM.

Start order: logging, open the node (config, key, genesis, database: any problem is one line and
exit 1), start it (on a chain with other validators: its p2p listener on p2p_host:p2p_port and a
link to every peer in [peers], see `node.net.cluster`; then consensus), then serve the API and announce
its URL. Stop order, on the first signal: stop accepting HTTP, close event streams, wait briefly for
in-flight requests, stop the node (its peer links, then consensus, then its database; each part
even when one before it failed). If the node halted by itself, the exit status is 1 and the one
line says why, but only once everything is closed: a second start on the same home works. A second
signal while stopping is ignored: stopping is already as fast as it can be without risking the
database.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cli.errors import CliError
from node import logs
from node.api.app import ApiServer, limits_from_config, make_app
from node.config import NodeConfig, load_config

log = logging.getLogger("ledgerd.cli")


def _rest_tls(config: NodeConfig) -> ssl.SSLContext | None:
    """The operator's certificate for HTTPS on the REST port, or None for plain HTTP."""
    if config.rest_tls_cert_file is None:
        return None
    cert, key = config.path("rest_tls_cert_file"), config.path("rest_tls_key_file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot use the REST certificate {cert} with key {key}: {exc}") from None
    return context


# The cyclic garbage collector's thresholds for a running node (CPython's default is 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 10)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running node, once it has started.

    A node allocates a few objects per transaction at every step and keeps tens of thousands alive
    (pending transactions, decode and parse memos, the modules it imported), and almost everything
    it frees is freed by reference counting; measured under load (docs/benchmarks.md), the default
    collector still took over a tenth of a validator's CPU, much of it re-scanning what lives for
    the whole run. So: collect once, move every object alive after startup out of the collector's
    sight (`gc.freeze`: the modules, the node's parts; reference counting still frees them, only a
    garbage cycle among them would stay), and collect the young generation every 20,000 net
    allocations instead of 700. Cycles made later are still collected, a little later; what that
    holds back is bounded by the threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_node(home: Path, overrides: Mapping[str, Any]) -> int:
    # Logging first, from the same settings the node will use, so even a failing open is logged well.
    config = load_config(home, overrides)
    context = logs.NodeLogContext(node_id="-")
    logs.configure(config.log_format, config.log_level, fallback=context)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    from node.node import Node

    node = Node.open(home, overrides)
    context = logs.NodeLogContext(node_id=node.node_id, height=lambda: node.height)
    logs.configure(config.log_format, config.log_level, fallback=context)
    token = logs.bind_node(context)
    server: ApiServer | None = None
    api_failure: str | None = None
    try:
        await node.start()
        limits = limits_from_config(node.config)
        server = ApiServer(make_app(node.service, node.metrics, limits, logging.getLogger("ledgerd.api")),
                           node.config.rest_host, node.config.rest_port, limits.shutdown_timeout_s,
                           ssl_context=_rest_tls(node.config))
        try:
            await server.start()
        except OSError as exc:
            server = None
            where = f"{node.config.rest_host}:{node.config.rest_port}"
            hint = ("; is another node using it? choose another port with --rest-port"
                    if exc.errno == errno.EADDRINUSE else "")
            raise CliError(f"cannot serve the REST API on {where}: {exc.strerror or exc}{hint}") from None
        log.info("REST API listening on %s", server.url, extra={"fields": {"url": server.url}})
        print(f"ledgerd node {node.node_id[:16]} serving {server.url}", flush=True)
        tune_gc()
        # Run until a signal, or until the node halts by itself (a failed durable write, a block it
        # cannot apply): then it must not keep answering as if it were healthy.
        signalled = asyncio.create_task(stop.wait())
        halted = asyncio.create_task(node.wait_stopped())
        try:
            await asyncio.wait({signalled, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (signalled, halted):
                task.cancel()
            await asyncio.gather(signalled, halted, return_exceptions=True)
        log.info("stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            # A second Ctrl-C during an orderly stop must not abort it half-way.
            signal.signal(sig, signal.SIG_IGN)
        # Every part is closed even if one fails (the database last, inside node.stop, whatever
        # happened before it): a failure is one log line here and exit status 1 below.
        if server is not None:
            try:
                await server.stop()
            except Exception as exc:
                api_failure = f"{type(exc).__name__}: {exc}"
                log.error("stopping the REST API failed: %s", api_failure)
        try:
            await node.stop()
        finally:
            logs.unbind_node(token)
    log.info("stopped")
    sys.stdout.flush()
    if node.fatal_error is not None:
        raise CliError(f"the node halted: {node.fatal_error}")
    if api_failure is not None:
        raise CliError(f"stopping the REST API failed: {api_failure}")
    return 0
