"""Peer-to-peer transport between validators: authenticated aiohttp WebSockets, framing, gossip
and request/response.

Owns: the p2p listener (its own port, separate from the REST API), one connection per peer pair,
the handshake (`p2p.handshake`), the frame format (`p2p.frames`), per-peer bounded send queues,
reconnecting with jittered exponential backoff, penalties for peers that send garbage, and the
transport's counters and per-peer status.

Must not import: `node` (the daemon plugs this in, never the reverse), `storage`, or the consensus
engines. Of our packages only `ledger` (keys, chain id rule, canonical JSON); otherwise aiohttp,
pydantic, cryptography (the TLS certificate) and the standard library. It knows nothing about what
the bytes mean: topics are opaque labels, payloads opaque bytes. Many P2PNodes can run in one
process (no module-level state).

API (all of it; see the docstrings for details):

    P2PConfig(...)                               pydantic, extra="forbid": every limit and timeout
    node = P2PNode(config, key, chain_id, validators, peers, on_message, rng=None, observers=())
        peers: {node_id: "wss://host:port"} to dial (ourselves is skipped); validators and
        observers are the node ids allowed to connect; on_message(peer_id, topic, payload) is
        called on the event loop for every gossip message and must return quickly.
    await node.start()      bind (port 0 allowed: read node.port / node.url) and start dialing
    node.max_payload_bytes  the largest payload any frame can carry (size sync batches by it)
    await node.stop()       close every connection and the listener, cancel and await every task
    node.add_peer(peer_id, url)                         dial one more peer (or at a new url)
    node.send(peer_id, topic, payload) -> bool          False: not connected, too large, queue full
    node.broadcast(topic, payload, *, include_observers=True) -> int    peers that queued it
    node.register_handler(topic, async (peer_id, payload) -> bytes)     serve requests on a topic
    await node.request(peer_id, topic, payload, timeout_s=None) -> bytes
        raises RequestTimeout / PeerUnavailable / RemoteError (all RequestFailed, each with .code)
    node.connected_peers() -> list[str];  node.peer_status() -> {peer_id: {...}}
    node.counters: dict[str, int]        fixed names, see p2p.node.COUNTER_NAMES
    TopicChannel(node, "consensus")      .send(peer_id, data) / .broadcast(data) for the engine

Topics match `[a-z][a-z0-9_.-]{0,31}` (e.g. "consensus", "txs", "status", "sync"); handlers
refuse a request with `RequestRefused(code, message)`.

Who may take the listener's time (a stranger on the p2p port must never lock validators out;
CometBFT CVE-2020-5303 was this class of bug). Before anyone has proven a key, everything is
bounded, and refusals are cheap (an HTTP 429/503/403 before the WebSocket upgrade, counted as
`handshake_failed_<reason>`):

- TCP: at most `max_idle_connections` accepted connections that have not sent their upgrade
  request; a newer one closes the oldest (a genuine dialer asks at once, so it is never the oldest).
- Pre-auth deadline: the upgrade request and the hello must arrive within `hello_timeout_s` (2 s);
  the hello earns the rest of `handshake_timeout_s` for the last two frames.
- Dialers name themselves in the upgrade request (header `Ledgerd-Node-Id`). A known id gets its
  own `max_pending_handshakes_per_peer` slots, which no outsider can fill: a newer claim of the
  same id evicts the oldest pending one that has not said hello (else the oldest), so a squatter
  on a validator's id is pushed out by the validator itself. The hello must carry the claimed
  id, and the handshake still proves the key. Claims are rate-limited per (source address, id),
  so a flood from an address the validators share (a NAT; 127.0.0.1 in tests) does not use up
  theirs. An unknown claimed id is refused (403).
- Everyone else (no claim; e.g. a dialer from before the header): `max_pending_handshakes` in all,
  `max_pending_handshakes_per_source` per source address, and a token bucket per source address
  (`connect_rate_per_source`, `connect_burst_per_source`; `max_tracked_sources` buckets kept).
What remains: a claim is not proven until the handshake ends, so an attacker that keeps claiming
a validator's id can evict that validator's attempts here, if it claims again within the round
trip the validator needs to finish (from the validator's own address it can also use up that
claim's attempt rate). A link also forms by dialing the other way, and one per pair is enough.

Guarantees and non-guarantees: messages are delivered at most once and in order per connection;
a full queue, a disconnect or an oversize frame loses them (consensus and tx gossip tolerate
loss; requests fail with a typed error instead). `send`/`broadcast` never block. Exactly one
connection per peer pair survives a simultaneous dial: the one dialed by the lower node id.

Link security (`P2PConfig.tls`, on by default): links are wss://, TLS 1.3 with a throwaway
self-signed certificate per start, bound to both node keys by the handshake, which signs the
certificate's fingerprint as each side saw it (`p2p.tls`, `p2p.handshake`). Every frame after the
handshake is then encrypted and authenticated by TLS; a record changed, replayed, reordered or
injected on the path fails TLS's authentication, the link is dropped and counted
(`links_dropped_tampered`), and the dialer reconnects. Why TLS rather than our own key exchange
plus per-frame AEAD: both are built from the same primitives in OpenSSL, but TLS is the standard,
reviewed record protocol (sequence numbers, key schedule, close handling) that we would otherwise
re-create, wss:// is what operators, proxies and packet captures already understand, and the only
custom piece left is the binding of a certificate to a node key, which is the few lines above.
With `tls=False` the listener serves plain ws:// and frames after the handshake are neither
encrypted nor authenticated: for loopback tests only, and only when the operator says so.
The TLS handshake of an inbound connection is part of its pre-auth time, and a connection that
never starts one counts against `max_idle_connections` like one that never sends its upgrade.
"""

from p2p.config import P2PConfig
from p2p.errors import (
    HandshakeError,
    P2PError,
    PeerUnavailable,
    RemoteError,
    RequestFailed,
    RequestRefused,
    RequestTimeout,
)
from p2p.node import COUNTER_NAMES, P2P_PATH, P2PNode, TopicChannel

__all__ = [
    "COUNTER_NAMES",
    "P2P_PATH",
    "HandshakeError",
    "P2PConfig",
    "P2PError",
    "P2PNode",
    "PeerUnavailable",
    "RemoteError",
    "RequestFailed",
    "RequestRefused",
    "RequestTimeout",
    "TopicChannel",
]
