"""A small synchronous client of the REST API, for the CLI (`ledgerd tx`, `ledgerd status`) and scripts.

Standard library only (urllib), so a command that sends one request does not start an event loop.
Every failure is one of two exceptions with a one-line message: `RequestFailed` (the node answered
with an error body) or `NodeUnreachable` (no usable answer at all).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_TIMEOUT_S = 10.0
WAIT_DEFAULT_CEILING_S = 600.0  # a wait without a timeout ends at the node's limit, well before this
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a block of the largest configured size, with room to spare


class ClientError(Exception):
    """Base of the client's errors; str() is one line fit for a terminal."""


class NodeUnreachable(ClientError):
    """No answer, or an answer that is not the API's JSON."""


class RequestFailed(ClientError):
    """The node answered with an error body: `status`, `code` and `message` come from it."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


def normalize_url(url: str) -> str:
    """`127.0.0.1:8001` or `http://host:8001/` -> `http://host:8001`; ValueError for anything else."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not a node URL such as http://127.0.0.1:8001")
    try:
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"{url!r} has an invalid port") from exc
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"{url!r} must be just scheme://host:port, such as http://127.0.0.1:8001")
    return f"{parts.scheme}://{parts.netloc}"


class LedgerClient:
    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = normalize_url(base_url)
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None, timeout_s: float | None = None) -> Any:
        # Canonical JSON (sorted keys, no spaces, UTF-8): for a transaction these are the bytes the
        # node can read on its fast path (any JSON is accepted, canonical is simply cheaper).
        data = None if body is None else json.dumps(body, separators=(",", ":"), sort_keys=True,
                                                    ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        where = f"{method} {self.base_url}{path}"
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:  # noqa: S310
                return self._decode(resp.read(MAX_RESPONSE_BYTES + 1), where)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read(MAX_RESPONSE_BYTES + 1)
            try:
                answer = self._decode(raw, where)
            except NodeUnreachable:
                raise NodeUnreachable(f"{where} answered HTTP {exc.code} without a JSON error body") from None
            error = answer.get("error") if isinstance(answer, dict) else None
            if not isinstance(error, dict):
                raise NodeUnreachable(f"{where} answered HTTP {exc.code} without an error object") from None
            raise RequestFailed(exc.code, str(error.get("code", "unknown")), str(error.get("message", "")),
                                answer) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise NodeUnreachable(f"cannot reach the node at {self.base_url}: {reason}") from None
        except TimeoutError:
            raise NodeUnreachable(f"{where} timed out") from None
        except (ConnectionError, OSError) as exc:
            raise NodeUnreachable(f"{where} failed: {exc.strerror or exc}") from None

    @staticmethod
    def _decode(raw: bytes, where: str) -> Any:
        if len(raw) > MAX_RESPONSE_BYTES:
            raise NodeUnreachable(f"{where} answered more than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise NodeUnreachable(f"{where} did not answer JSON (is this a ledgerd node?)") from None

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/status")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    def account(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/accounts/{address}")
        return result

    def transaction(self, tx_hash: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/transactions/{tx_hash}")
        return result

    def submit(self, tx: dict[str, Any], wait: bool = False,
               wait_timeout_s: float | None = None) -> dict[str, Any]:
        """POST one signed transaction; with `wait`, answer only once it committed (or fail with 504)."""
        path = "/v1/transactions"
        if wait:
            path += "?wait=commit"
            if wait_timeout_s is not None:
                path += f"&timeout_s={wait_timeout_s:g}"
        # The node answers a wait within its own limit; the HTTP timeout only has to outlast that.
        waited = (wait_timeout_s if wait_timeout_s is not None else WAIT_DEFAULT_CEILING_S) if wait else 0.0
        http_timeout = self.timeout_s + waited
        result: dict[str, Any] = self.request("POST", path, tx, timeout_s=http_timeout)
        return result
