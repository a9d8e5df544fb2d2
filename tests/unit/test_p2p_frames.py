"""The p2p wire format (data frames, handshake frames, the transcript), config rules and backoff.

Everything a peer sends is untrusted, so every way a frame can be wrong must come back as a
`FrameError` with the right reason (the connection counts it), never as another exception.
"""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from ledger.keys import PrivateKey, verify
from p2p import P2PConfig, P2PNode, frames
from p2p.frames import FRAME_VERSION, FrameError, decode_frame
from p2p.handshake import Auth, Hello, transcript
from p2p.node import Backoff

LIMIT = 1 << 20


def raw(header: object, payload: bytes = b"", version: int = FRAME_VERSION) -> bytes:
    head = json.dumps(header).encode()
    return bytes((version,)) + len(head).to_bytes(2, "big") + head + payload


def test_every_frame_kind_round_trips() -> None:
    header, payload = decode_frame(frames.encode_message("consensus", b"\x00\xffvote"), LIMIT)
    assert header == frames.MessageHeader(k="msg", t="consensus") and payload == b"\x00\xffvote"
    header, payload = decode_frame(frames.encode_request("sync", 7, b"range"), LIMIT)
    assert header == frames.RequestHeader(k="req", t="sync", id=7) and payload == b"range"
    header, payload = decode_frame(frames.encode_response(7, b""), LIMIT)
    assert header == frames.ResponseHeader(k="res", id=7) and payload == b""
    header, payload = decode_frame(frames.encode_error(7, "busy", "é" * 1000), LIMIT)
    assert isinstance(header, frames.ErrorHeader)
    assert header.code == "busy" and header.message == "é" * frames.MAX_ERROR_MESSAGE_CHARS


def test_the_version_byte_comes_first_and_is_checked_before_anything_else() -> None:
    good = frames.encode_message("txs", b"batch")
    assert good[0] == FRAME_VERSION == 1
    with pytest.raises(FrameError) as err:
        decode_frame(bytes((2,)) + good[1:], LIMIT)
    assert err.value.reason == "version"


def test_oversize_is_refused_before_parsing() -> None:
    frame = frames.encode_message("sync", b"x" * 100)
    assert decode_frame(frame, len(frame))[1] == b"x" * 100
    with pytest.raises(FrameError) as err:
        decode_frame(frame, len(frame) - 1)
    assert err.value.reason == "oversize"


@pytest.mark.parametrize("data", [
    b"",
    b"\x01\x00",
    b"\x01\x00\x00",                                     # empty header
    b"\x01\x00\x10{}",                                   # header length beyond the frame
    b"\x01" + (frames.MAX_HEADER_BYTES + 1).to_bytes(2, "big") + b" " * 5000,
    b"\x01\x00\x05hello",                                # not JSON
    raw({"k": "msg"}),                                   # no topic
    raw({"k": "msg", "t": "consensus", "id": 1}),        # extra field
    raw({"k": "msg", "t": "Consensus"}),                 # topic pattern
    raw({"k": "msg", "t": "a" * 33}),
    raw({"k": "req", "t": "sync"}),                      # a request without an id
    raw({"k": "req", "t": "sync", "id": "1"}),           # strict: no str -> int coercion
    raw({"k": "req", "t": "sync", "id": -1}),
    raw({"k": "req", "t": "sync", "id": 2**63}),
    raw({"k": "res", "id": 1.0}),
    raw({"k": "err", "id": 1, "code": "Bad Code", "message": ""}),
    raw({"k": "err", "id": 1, "code": "busy", "message": ""}, b"payload"),
    raw({"k": "ping"}),
    raw(["msg", "consensus"]),
])
def test_malformed_frames_are_refused_with_a_typed_error(data: bytes) -> None:
    with pytest.raises(FrameError) as err:
        decode_frame(data, LIMIT)
    assert err.value.reason == "malformed"


def test_encoders_refuse_what_the_decoder_would_refuse() -> None:
    with pytest.raises(ValueError):
        frames.encode_message("Not A Topic", b"")
    with pytest.raises(ValueError):
        frames.encode_error(1, "Not-A-Code", "")
    longest = frames.encode_request("t" * 32, frames.MAX_REQUEST_ID, b"")
    assert len(longest) == frames.MAX_OVERHEAD_BYTES
    assert len(frames.encode_message("t" * 32, b"")) < frames.MAX_OVERHEAD_BYTES
    assert len(frames.encode_response(frames.MAX_REQUEST_ID, b"")) < frames.MAX_OVERHEAD_BYTES


def test_handshake_frames_are_strict() -> None:
    hello = {"type": "hello", "version": 1, "chain_id": "c1", "node_id": "a" * 64, "peer_id": "b" * 64,
             "challenge": "c" * 64}
    assert Hello.model_validate_json(json.dumps(hello)).node_id == "a" * 64
    for bad in ({**hello, "extra": 1}, {**hello, "node_id": "A" * 64}, {**hello, "version": "1"},
                {**hello, "challenge": "c" * 62}, {**hello, "chain_id": "bad chain"}):
        with pytest.raises(ValidationError):
            Hello.model_validate_json(json.dumps(bad))
    with pytest.raises(ValidationError):
        Auth.model_validate_json(json.dumps({"type": "auth", "signature": "00" * 63}))


def test_transcript_binds_role_chain_both_ids_and_both_challenges() -> None:
    key = PrivateKey.from_seed(bytes(32))
    args = ("chain-a", "d" * 64, "l" * 64, "1" * 64, "2" * 64)
    signature = key.sign(transcript("dialer", *args))
    assert verify(key.address, signature, transcript("dialer", *args))
    # A signature made in one role, chain, pairing or session is worthless in any other.
    assert not verify(key.address, signature, transcript("listener", *args))
    for i, other in enumerate(("chain-b", "e" * 64, "m" * 64, "3" * 64, "4" * 64)):
        changed = list(args)
        changed[i] = other
        assert not verify(key.address, signature, transcript("dialer", *changed))


def test_config_forbids_unknown_fields_and_inconsistent_limits() -> None:
    assert P2PConfig().max_frame_bytes == 16 * 1024 * 1024
    with pytest.raises(ValidationError):
        P2PConfig(max_frame_size=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        P2PConfig(max_frame_bytes=1 << 20, hard_max_frame_bytes=1 << 19)
    with pytest.raises(ValidationError):
        P2PConfig(max_frame_bytes=1 << 20, send_queue_max_bytes=1 << 19)
    with pytest.raises(ValidationError):
        P2PConfig(reconnect_backoff_min_s=2, reconnect_backoff_max_s=1)
    with pytest.raises(ValidationError):
        P2PConfig(listen_port=70000)


async def test_node_refuses_bad_identities_and_urls() -> None:
    key, other = PrivateKey.generate(), PrivateKey.generate()

    def make(peers: dict[str, str], validators: list[str] | None = None, chain_id: str = "c1",
             tls: bool = False) -> P2PNode:
        return P2PNode(P2PConfig(tls=tls), key, chain_id, validators or [key.address, other.address], peers,
                       lambda p, t, d: None)

    node = make({key.address: "ws://127.0.0.1:1", other.address: "ws://127.0.0.1:2"})
    assert node.node_id == key.address and node.connected_peers() == []
    assert list(node.peer_status()) == [other.address]  # ourselves is not a peer
    assert node.peer_status()[other.address]["url"] == "ws://127.0.0.1:2/p2p/v1"
    node.add_peer(other.address, "wss://peer.example:9443/custom")  # not started: nothing is dialed
    assert node.peer_status()[other.address]["url"] == "wss://peer.example:9443/custom"
    with pytest.raises(ValueError):
        make({}, chain_id="bad chain")
    with pytest.raises(ValueError):
        make({}, validators=[key.address, "XYZ"])
    with pytest.raises(ValueError):
        make({PrivateKey.generate().address: "ws://127.0.0.1:1"})  # not a validator or observer
    for url in ("http://127.0.0.1:1", "ws://127.0.0.1", "127.0.0.1:9001", "ws://127.0.0.1:99999", "ws://:80"):
        with pytest.raises(ValueError):
            make({other.address: url})
    # With TLS on (the default) plain ws:// is refused; wss:// is what it dials.
    assert P2PConfig().tls
    with pytest.raises(ValueError, match="plain ws://"):
        make({other.address: "ws://127.0.0.1:2"}, tls=True)
    assert make({other.address: "wss://127.0.0.1:2"}, tls=True).peer_status()[other.address]["url"] == \
        "wss://127.0.0.1:2/p2p/v1"


def test_reconnect_backoff_is_jittered_exponential_and_capped() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    bounds = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    delays = [backoff.next_delay() for _ in bounds]
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound / 2 <= delay <= bound
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1
    same_seed = Backoff(0.1, 1.0, random.Random(7))
    assert [same_seed.next_delay() for _ in bounds] == delays  # the injected rng makes it replayable
