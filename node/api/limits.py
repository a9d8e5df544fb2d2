"""`ApiLimits`: every limit the HTTP layer enforces (built from the node configuration)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiLimits:
    """Every limit the HTTP layer enforces; the defaults are the node configuration's defaults."""

    max_body_bytes: int = 1 << 20  # a POST body larger than this is refused with 413 before it is read
    max_batch_txs: int = 1000  # a larger JSON array of transactions is refused with 413 batch_too_large
    commit_wait_timeout_s: float = 30.0  # ?wait=commit answers 504 after this long (or ?timeout_s=, if less)
    max_ws_subscribers: int = 64  # concurrent /v1/events streams; more get 503 too_many_subscribers
    ws_send_timeout_s: float = 10.0  # a subscriber that takes longer to accept one message is cut off
    ws_heartbeat_s: float = 20.0  # ping interval that detects dead event subscribers
    shutdown_timeout_s: float = 5.0  # how long stopping waits for in-flight requests
    ws_client_frames_per_s: float = 5.0  # frames an event subscriber may send (pings, pongs, ...), on average
    body_timeout_s: float = 30.0  # a request body that takes longer to arrive is answered 408
    idle_timeout_s: float = 30.0  # a connection with no request under way is closed after this long
    header_timeout_s: float = 10.0  # a request head must be complete this long after its first byte
    linger_timeout_s: float = 2.0  # an unread body is discarded for at most this long after the answer
    max_connections: int = 1024  # open connections; more are answered 429 and closed
    max_connections_per_ip: int = 128  # open connections from one source address
    max_headers: int = 64  # header lines in one request
    max_line_bytes: int = 8190  # the request line (so the URL) and each header line
    explorer: bool = True  # serve the web explorer at /explorer/ (the REST reads behind it stay on)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch_txs", "max_ws_subscribers", "max_connections",
                     "max_connections_per_ip", "max_headers", "max_line_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("commit_wait_timeout_s", "ws_send_timeout_s", "ws_heartbeat_s", "shutdown_timeout_s",
                     "ws_client_frames_per_s", "body_timeout_s", "idle_timeout_s", "header_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
