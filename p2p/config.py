"""P2P configuration: every limit and timeout of the transport, named, with defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024


class P2PConfig(BaseModel):
    """Listener address, frame and queue limits, timeouts and reconnect policy of one P2PNode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=9001, ge=0, le=65535)  # 0: let the OS pick; read P2PNode.port
    # True: the listener serves wss:// only and plain ws:// peer URLs are refused (see p2p.tls).
    # False: the listener serves plain ws:// (frames neither encrypted nor authenticated after the
    # handshake), for loopback tests; wss:// peers are still dialed over TLS.
    tls: bool = True

    # A frame above max_frame_bytes is read, dropped and counted as a bad frame. One above
    # hard_max_frame_bytes cannot even be buffered: the WebSocket reader closes the connection (1009).
    max_frame_bytes: int = Field(default=16 * MiB, ge=4096)
    hard_max_frame_bytes: int = Field(default=32 * MiB, ge=4096)

    # Per-connection send queue, bounded in frames and in bytes; when full, frames are dropped.
    send_queue_max: int = Field(default=1024, ge=1)
    send_queue_max_bytes: int = Field(default=64 * MiB, ge=4096)
    # One frame taking longer than this to hand to the socket means the peer is not reading.
    send_timeout_s: float = Field(default=30.0, gt=0)

    handshake_timeout_s: float = Field(default=5.0, gt=0)
    # The pre-auth deadline: an inbound connection must send its upgrade request and its hello
    # within this (capped by handshake_timeout_s), or it is closed. Short, so that a silent client
    # holds a slot only briefly.
    hello_timeout_s: float = Field(default=2.0, gt=0)
    # Admission before the WebSocket upgrade (see p2p.limits). Outsiders, i.e. connections that
    # claim no known node id: in handshake at once in all, and from one source address.
    max_pending_handshakes: int = Field(default=8, ge=1)
    max_pending_handshakes_per_source: int = Field(default=2, ge=1)
    # Connections claiming a known node id have this many slots per id, apart from the outsiders.
    max_pending_handshakes_per_peer: int = Field(default=2, ge=1)
    # Connection attempts: a token bucket per source address (per source and claimed id for claims).
    connect_rate_per_source: float = Field(default=5.0, gt=0)  # attempts per second, sustained
    connect_burst_per_source: int = Field(default=10, ge=1)
    max_tracked_sources: int = Field(default=4096, ge=1)  # buckets kept; the least recently used go
    # Accepted TCP connections that have not sent their upgrade request yet; when more arrive, the
    # oldest is closed to make room (each is closed after the pre-auth deadline anyway).
    max_idle_connections: int = Field(default=256, ge=1)
    # Observers: nodes that follow the chain without voting. With open_observers any node key of
    # this chain may connect as one (not only the configured observers), and at most
    # max_observer_links links to non-validators are kept at once (the next is refused).
    open_observers: bool = False
    max_observer_links: int = Field(default=8, ge=0)

    reconnect_backoff_min_s: float = Field(default=0.2, gt=0)
    reconnect_backoff_max_s: float = Field(default=10.0, gt=0)

    request_timeout_s: float = Field(default=10.0, gt=0)  # default for P2PNode.request
    max_pending_requests: int = Field(default=256, ge=1)  # our own outstanding requests, all peers
    max_concurrent_requests_per_peer: int = Field(default=4, ge=1)  # a peer's requests we serve at once
    handler_timeout_s: float = Field(default=30.0, gt=0)  # a request handler running longer is cancelled

    # Bad frames (garbage, oversize, wrong version, unexpected) tolerated on one connection; the next
    # one disconnects the peer and refuses it for a penalty that doubles per offence up to the max.
    max_bad_frames_before_disconnect: int = Field(default=16, ge=0)
    penalty_min_s: float = Field(default=5.0, gt=0)
    penalty_max_s: float = Field(default=300.0, gt=0)

    # WebSocket ping interval; a peer that does not answer within half of it is disconnected.
    ping_interval_s: float = Field(default=10.0, gt=0)
    close_timeout_s: float = Field(default=2.0, gt=0)  # waiting for the peer's close frame

    @model_validator(mode="after")
    def _consistent(self) -> P2PConfig:
        if self.hard_max_frame_bytes < self.max_frame_bytes:
            raise ValueError("hard_max_frame_bytes must be at least max_frame_bytes")
        if self.send_queue_max_bytes < self.max_frame_bytes:
            raise ValueError("send_queue_max_bytes must hold at least one frame of max_frame_bytes")
        if self.reconnect_backoff_max_s < self.reconnect_backoff_min_s:
            raise ValueError("reconnect_backoff_max_s must be at least reconnect_backoff_min_s")
        if self.penalty_max_s < self.penalty_min_s:
            raise ValueError("penalty_max_s must be at least penalty_min_s")
        return self
