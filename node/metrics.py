"""Prometheus metrics for one node, on a registry of its own (never the process-global one),
so several nodes can run in one process and each /metrics shows only its node."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# The liveness gauges (`watch_liveness`): name -> help. What an operator alerts on when commits stop.
LIVENESS_GAUGES: Mapping[str, str] = MappingProxyType({
    "validators_connected": "Validators this node is in touch with, itself included",
    "quorum": "Validators that must take part for a block to commit (PBFT: n - f; Raft: a majority)",
    "seconds_since_commit": "Seconds since the timestamp of the last committed block",
    "rounds_without_commit": "PBFT round timeouts or Raft election timeouts since the last commit",
    "consensus_ok": "1 when consensus_health is ok (quorum connected, not syncing, no stall), else 0",
})

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.height = Gauge("ledgerd_height", "Height of the last committed block", registry=r)
        self.txs_committed = Counter("ledgerd_txs_committed", "Transactions committed in blocks", registry=r)
        self.blocks_committed = Counter("ledgerd_blocks_committed", "Blocks committed", registry=r)
        self.mempool_size = Gauge("ledgerd_mempool_txs", "Transactions waiting in the mempool", registry=r)
        self.txs_rejected = Counter("ledgerd_txs_rejected", "Transactions refused at submission", ["code"],
                                    registry=r)
        self.txs_regossiped = Counter("ledgerd_txs_regossiped",
                                      "Pending transactions gossiped again after gossip_resend_after_s", registry=r)
        self.request_latency = Histogram(
            "ledgerd_http_request_duration_seconds", "REST request latency", ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.commit_latency = Histogram(
            "ledgerd_block_commit_duration_seconds", "Time to execute and durably store a block",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.dropped = Counter("ledgerd_dropped_messages", "Messages dropped, by reason", ["reason"], registry=r)
        self.peers = Gauge("ledgerd_peers_connected", "Validator peers currently connected", registry=r)
        self.syncing = Gauge("ledgerd_syncing", "1 while the node is catching up by block sync", registry=r)

    def watch_engine(self, counters: Callable[[], Mapping[str, int]]) -> None:
        """Export the consensus engine's own counters (round timeouts, elections, dropped messages by
        reason, ...) as `ledgerd_engine_events_total{event}`, read at scrape time."""
        self.registry.register(_CountsCollector(
            "ledgerd_engine_events", "Consensus engine events (round timeouts, round changes, elections, "
            "dropped messages by reason), by event", "event", counters))

    def watch_liveness(self, read: Callable[[], Mapping[str, float]]) -> None:
        """Export the node's liveness figures (`LIVENESS_GAUGES`) as `ledgerd_<name>`, read at scrape
        time so they are current even when nobody asks /v1/status."""
        self.registry.register(_LivenessCollector(read))

    def watch_signatures(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export transaction signature checks by where they ran as
        `ledgerd_signatures_verified_total{where}`, read at scrape time: `inline` (on the event
        loop), `workers` (the signature workers), `shared` (waited for a check already in flight
        instead of checking again), `block_check` (a proposal's transactions not checked before)."""
        self.registry.register(_CountsCollector(
            "ledgerd_signatures_verified", "Transaction signatures checked, by where", "where", counts))

    def observe_commit(self, height: int, tx_count: int, seconds: float) -> None:
        self.height.set(height)
        self.blocks_committed.inc()
        self.txs_committed.inc(tx_count)
        self.commit_latency.observe(seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_latency.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CountsCollector(Collector):
    """One counter family with one label, from a mapping read at scrape time."""

    def __init__(self, name: str, help_text: str, label: str, counts: Callable[[], Mapping[str, int]]) -> None:
        self._name, self._help, self._label, self._counts = name, help_text, label, counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._help, labels=[self._label])
        for name, value in sorted(self._counts().items()):
            family.add_metric([name], value)
        yield family


class _LivenessCollector(Collector):
    def __init__(self, read: Callable[[], Mapping[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self._read()
        for name, help_text in LIVENESS_GAUGES.items():
            if name in values:
                yield GaugeMetricFamily(f"ledgerd_{name}", help_text, value=values[name])
