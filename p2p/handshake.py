"""The handshake: both ends prove possession of their node key before any data frame flows.

Three JSON text frames (strict pydantic models), then one more from the listener:

    dialer   -> listener  hello     {type, version, chain_id, node_id: D, peer_id: L, challenge: cD}
    listener -> dialer    challenge {type, version, chain_id, node_id: L, challenge: cL}
    dialer   -> listener  auth      {type, signature: sign_D(transcript("dialer"))}
    listener -> dialer    auth      {type, signature: sign_L(transcript("listener"))}

transcript(role) = b"ledgerd-p2p-handshake-v1:" + canonical_json({chain_id, role, dialer: D,
listener: L, dialer_challenge: cD, listener_challenge: cL}). Challenges are 32 fresh bytes from the
OS CSPRNG, so a recorded handshake is worthless later, and the role in the transcript keeps one
side's signature from being reflected as the other's. The listener signs only after it has checked
the dialer's signature, so a stranger who can reach our port cannot use us as a signing oracle.

Before the first frame, the dialer names itself in its upgrade request (`NODE_ID_HEADER`): that
only chooses which admission slots the attempt uses (see the `p2p` package docstring); the
listener refuses a hello whose node id differs from the claim, and the signatures prove the rest.

On wss:// links (the default) the transcript also carries the fingerprint of the listener's TLS
certificate as each side saw it, which ties the TLS session, and so every frame after the
handshake, to both node keys (`p2p.tls`). On a plaintext ws:// link (only where the operator set
it explicitly, for loopback tests) frames after the handshake are neither encrypted nor
authenticated: anyone on the path could read, inject or change them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ledger import keys
from ledger.encoding import canonical_json
from ledger.tx import CHAIN_ID_RE
from p2p.errors import HandshakeError

HANDSHAKE_VERSION = 1
# The dialer names itself in its upgrade request, so the listener can admit it into the slots kept
# for that node id before any frame flows; the hello must then carry the same id (and prove it).
NODE_ID_HEADER = "Ledgerd-Node-Id"
MAX_HANDSHAKE_FRAME_CHARS = 4096
_DOMAIN = b"ledgerd-p2p-handshake-v1:"

# WebSocket close codes (4000-4999 is the range for applications).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_MALFORMED = 4000
CLOSE_BAD_SIGNATURE = 4001
CLOSE_VERSION = 4002
CLOSE_NOT_ALLOWED = 4003
CLOSE_WRONG_CHAIN = 4004
CLOSE_WRONG_PEER = 4005
CLOSE_BAD_FRAMES = 4008
CLOSE_DUPLICATE = 4009
CLOSE_SEND_TIMEOUT = 4010
CLOSE_PENALIZED = 4029

NodeId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Challenge32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ChainId = Annotated[str, Field(pattern=f"^{CHAIN_ID_RE.pattern}$")]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_FrameT = TypeVar("_FrameT", bound=_Frame)


class Hello(_Frame):
    type: Literal["hello"]
    version: int
    chain_id: ChainId
    node_id: NodeId
    peer_id: NodeId  # whom the dialer means to reach: a listener that is someone else refuses
    challenge: Challenge32


class ChallengeFrame(_Frame):
    type: Literal["challenge"]
    version: int
    chain_id: ChainId
    node_id: NodeId
    challenge: Challenge32


class Auth(_Frame):
    type: Literal["auth"]
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]


def transcript(role: str, chain_id: str, dialer: str, listener: str, dialer_challenge: str,
               listener_challenge: str, channel: str = "") -> bytes:
    """The bytes each side signs; `role` is the signer's role, "dialer" or "listener".

    `channel` is the SHA-256 of the listener's TLS certificate as the signer sees it ("" on a
    plaintext link): signing it binds the TLS session to both node keys (see `p2p.tls`).
    """
    fields = {
        "chain_id": chain_id, "role": role, "dialer": dialer, "listener": listener,
        "dialer_challenge": dialer_challenge, "listener_challenge": listener_challenge,
    }
    if channel:
        fields["channel"] = channel
    return _DOMAIN + canonical_json(fields)


def new_challenge() -> str:
    return secrets.token_bytes(32).hex()


class WebSocketLike(Protocol):
    async def send_str(self, data: str) -> None: ...

    async def receive(self) -> aiohttp.WSMessage: ...


@dataclass(frozen=True)
class Identity:
    """Who we are and whom we talk to: the same for every handshake of one node."""

    key: keys.PrivateKey
    chain_id: str
    allowed: frozenset[str]  # validators and configured observers
    open_admission: bool = False  # any other node id may connect too (as an observer)

    def admits(self, node_id: str) -> bool:
        return node_id != self.node_id and (self.open_admission or node_id in self.allowed)

    @property
    def node_id(self) -> str:
        return self.key.address


async def _receive(ws: WebSocketLike, model: type[_FrameT]) -> _FrameT:
    msg = await ws.receive()
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        raise HandshakeError("closed", f"peer closed the connection during the handshake "
                             f"(code {msg.data}, {msg.extra or 'no reason'})", CLOSE_NORMAL)
    if msg.type is aiohttp.WSMsgType.ERROR:
        raise HandshakeError("malformed", f"WebSocket error in the handshake: {msg.data}", CLOSE_MALFORMED)
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise HandshakeError("malformed", f"expected a text frame, got {msg.type.name}", CLOSE_MALFORMED)
    text = msg.data
    if not isinstance(text, str) or len(text) > MAX_HANDSHAKE_FRAME_CHARS:
        raise HandshakeError("malformed", "handshake frame too long", CLOSE_MALFORMED)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise HandshakeError("malformed", f"bad {model.__name__} frame: {exc.error_count()} error(s)",
                             CLOSE_MALFORMED) from exc


def _check_version(version: int) -> None:
    if version != HANDSHAKE_VERSION:
        raise HandshakeError("version", f"handshake version {version} is not {HANDSHAKE_VERSION}",
                             CLOSE_VERSION)


def _check_chain(ident: Identity, chain_id: str) -> None:
    if chain_id != ident.chain_id:
        raise HandshakeError("wrong_chain", f"peer is on chain {chain_id!r}, not {ident.chain_id!r}",
                             CLOSE_WRONG_CHAIN)


async def dial(ws: WebSocketLike, ident: Identity, expected_peer: str, channel: str = "") -> str:
    """Run the dialer's side on an open WebSocket; returns the authenticated peer id.

    `channel`: the fingerprint of the certificate the listener showed (wss://), "" for ws://.
    """
    my_challenge = new_challenge()
    await ws.send_str(Hello(type="hello", version=HANDSHAKE_VERSION, chain_id=ident.chain_id,
                            node_id=ident.node_id, peer_id=expected_peer,
                            challenge=my_challenge).model_dump_json())
    challenge = await _receive(ws, ChallengeFrame)
    _check_version(challenge.version)
    _check_chain(ident, challenge.chain_id)
    if challenge.node_id != expected_peer:
        raise HandshakeError("wrong_peer", f"expected node {expected_peer[:16]}…, reached "
                             f"{challenge.node_id[:16]}…", CLOSE_WRONG_PEER)
    args = (ident.chain_id, ident.node_id, expected_peer, my_challenge, challenge.challenge, channel)
    signature = ident.key.sign(transcript("dialer", *args))
    await ws.send_str(Auth(type="auth", signature=signature.hex()).model_dump_json())
    auth = await _receive(ws, Auth)
    if not keys.verify(expected_peer, bytes.fromhex(auth.signature), transcript("listener", *args)):
        raise HandshakeError("bad_signature", "the listener's handshake signature is invalid",
                             CLOSE_BAD_SIGNATURE)
    return expected_peer


async def accept(ws: WebSocketLike, ident: Identity, admit: Callable[[str], HandshakeError | None],
                 channel: str = "") -> str:
    """Run the listener's side on an open WebSocket; returns the authenticated peer id.

    `channel`: the fingerprint of our own TLS certificate on a wss:// listener, "" on ws://.
    `admit(peer_id)` may refuse a peer that is otherwise allowed (e.g. one serving a penalty).
    """
    hello = await _receive(ws, Hello)
    _check_version(hello.version)
    _check_chain(ident, hello.chain_id)
    if hello.peer_id != ident.node_id:
        raise HandshakeError("wrong_peer", f"dialer wants node {hello.peer_id[:16]}…, this is "
                             f"{ident.node_id[:16]}…", CLOSE_WRONG_PEER)
    if not ident.admits(hello.node_id):
        raise HandshakeError("not_allowed", f"node {hello.node_id[:16]}… is not a validator or observer "
                             "of this chain", CLOSE_NOT_ALLOWED)
    refusal = admit(hello.node_id)
    if refusal is not None:
        raise refusal
    my_challenge = new_challenge()
    await ws.send_str(ChallengeFrame(type="challenge", version=HANDSHAKE_VERSION, chain_id=ident.chain_id,
                                     node_id=ident.node_id, challenge=my_challenge).model_dump_json())
    auth = await _receive(ws, Auth)
    args = (ident.chain_id, hello.node_id, ident.node_id, hello.challenge, my_challenge, channel)
    if not keys.verify(hello.node_id, bytes.fromhex(auth.signature), transcript("dialer", *args)):
        raise HandshakeError("bad_signature", "the dialer's handshake signature is invalid",
                             CLOSE_BAD_SIGNATURE)
    signature = ident.key.sign(transcript("listener", *args))
    await ws.send_str(Auth(type="auth", signature=signature.hex()).model_dump_json())
    return hello.node_id
