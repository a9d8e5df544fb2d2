"""Typed failures of the transport, each with a stable snake_case `code`."""

from __future__ import annotations


class P2PError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RequestFailed(P2PError):
    """`P2PNode.request` did not get an answer."""


class RequestTimeout(RequestFailed):
    """No response within the timeout (code "timeout")."""


class PeerUnavailable(RequestFailed):
    """The request could not be sent or its connection went away.

    Codes: "not_connected", "disconnected", "queue_full", "too_many_requests", "too_large", "stopped".
    """


class RemoteError(RequestFailed):
    """The peer answered with an error; `code` is the peer's (e.g. "no_handler", "busy")."""


class RequestRefused(P2PError):
    """Raised by a request handler to answer the requester with a specific error code."""


class HandshakeError(P2PError):
    """A handshake failed; `close_code` is the WebSocket close code sent to the peer."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(code, message)
        self.close_code = close_code
