"""BFT wire messages: strict decoding, and signatures bound to chain, height, round and kind."""

from __future__ import annotations

import random

import pytest

from consensus.bft.messages import (
    ZERO_DIGEST,
    Claim,
    DecodeError,
    Kind,
    Message,
    Vote,
    decode,
    encode,
    signing_bytes,
)

DIGEST = "ab" * 32
OTHER = "cd" * 32
SIG = b"\x01" * 64


def msg(kind: Kind = Kind.PREPARE, round: int = 0, **kw: object) -> Message:
    fields: dict[str, object] = dict(kind=kind, chain_id="chain-a", height=7, round=round, author=2,
                                     digest=DIGEST, signature=SIG)
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def examples() -> list[Message]:
    votes = (Vote(0, SIG), Vote(1, b"\x02" * 32))
    return [
        msg(Kind.PREPARE),
        msg(Kind.COMMIT, round=3),
        msg(Kind.PROPOSAL, block_bytes=b'{"header":{}}'),
        msg(Kind.PROPOSAL, round=2, block_bytes=b"block", votes=votes,
            claims=(Claim(0, 1, DIGEST, SIG), Claim(3, -1, ZERO_DIGEST, SIG))),
        msg(Kind.ROUND_CHANGE, round=1, digest=ZERO_DIGEST),
        msg(Kind.ROUND_CHANGE, round=5, prepared_round=4, votes=votes, block_bytes=b"block"),
        msg(Kind.DECIDED, round=1, votes=votes, block_bytes=b"block"),
    ]


@pytest.mark.parametrize("original", examples(), ids=lambda m: m.kind.name)
def test_every_kind_round_trips(original: Message) -> None:
    decoded = decode(encode(original))
    assert decoded.identity() == original.identity()
    assert (decoded.signature, decoded.votes, decoded.claims, decoded.block_bytes) == (
        original.signature, original.votes, original.claims, original.block_bytes)


@pytest.mark.parametrize("original", examples(), ids=lambda m: m.kind.name)
def test_every_truncation_and_every_extension_is_rejected(original: Message) -> None:
    data = encode(original)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])
    with pytest.raises(DecodeError, match="trailing"):
        decode(data + b"\x00")


def test_random_garbage_and_bit_flips_raise_only_decode_error() -> None:
    rng = random.Random(7)
    valid = [encode(m) for m in examples()]
    for _ in range(3000):
        if rng.random() < 0.3:
            data = rng.randbytes(rng.randrange(200))
        else:
            buf = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        try:
            decode(data)
        except DecodeError:
            pass


@pytest.mark.parametrize("bad, reason", [
    (msg(Kind.PREPARE, block_bytes=b"x"), "no attachments"),
    (msg(Kind.COMMIT, votes=(Vote(0, SIG),)), "no attachments"),
    (msg(Kind.PROPOSAL), "without a block"),
    (msg(Kind.PROPOSAL, block_bytes=b"b", claims=(Claim(0, -1, ZERO_DIGEST, SIG),)), "round-0"),
    (msg(Kind.PROPOSAL, round=1, block_bytes=b"b"), "needs round-change claims"),
    (msg(Kind.ROUND_CHANGE, round=0, digest=ZERO_DIGEST), "malformed round change"),
    (msg(Kind.ROUND_CHANGE, round=2, digest=DIGEST), "carries nothing"),
    (msg(Kind.ROUND_CHANGE, round=2, prepared_round=2, votes=(Vote(0, SIG),), block_bytes=b"b"),
     "earlier round"),
    (msg(Kind.ROUND_CHANGE, round=2, prepared_round=1, block_bytes=b"b"), "certificate"),
    (msg(Kind.PREPARE, prepared_round=0), "not a round change"),
    (msg(Kind.DECIDED, block_bytes=b"b"), "seals"),
])
def test_attachments_must_fit_the_kind(bad: Message, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(encode(bad))


def test_field_ranges_are_checked() -> None:
    data = bytearray(encode(msg()))
    data[0] ^= 0xFF
    with pytest.raises(DecodeError, match="magic"):
        decode(bytes(data))
    data = bytearray(encode(msg()))
    data[4] = 99  # kind
    with pytest.raises(DecodeError, match="kind"):
        decode(bytes(data))
    with pytest.raises(DecodeError, match="chain id"):
        decode(encode(msg(chain_id="bad chain!")))
    with pytest.raises(DecodeError, match="too many votes"):
        decode(encode(msg(Kind.DECIDED, votes=(Vote(0, SIG),) * 5, block_bytes=b"b")), max_votes=4)


def test_signatures_are_bound_to_chain_height_round_kind_and_content() -> None:
    base = signing_bytes("chain-a", Kind.PREPARE, 7, 0, DIGEST)
    assert base.startswith(b"ledgerd-bft-v1:")
    variants = [
        signing_bytes("chain-b", Kind.PREPARE, 7, 0, DIGEST),
        signing_bytes("chain-a", Kind.COMMIT, 7, 0, DIGEST),
        signing_bytes("chain-a", Kind.PROPOSAL, 7, 0, DIGEST),
        signing_bytes("chain-a", Kind.PREPARE, 8, 0, DIGEST),
        signing_bytes("chain-a", Kind.PREPARE, 7, 1, DIGEST),
        signing_bytes("chain-a", Kind.PREPARE, 7, 0, OTHER),
    ]
    assert len({base, *variants}) == len(variants) + 1
    rc = signing_bytes("chain-a", Kind.ROUND_CHANGE, 7, 3, DIGEST, 1)
    assert rc != signing_bytes("chain-a", Kind.ROUND_CHANGE, 7, 3, DIGEST, 2)
    assert signing_bytes("chain-a", Kind.ROUND_CHANGE, 7, 3, ZERO_DIGEST, -1) != \
        signing_bytes("chain-a", Kind.ROUND_CHANGE, 7, 3, ZERO_DIGEST, 0)
