"""The round-change rules of QBFT: what a ROUND-CHANGE must prove, and what justifies a proposal.

These rules keep rounds safe. If a block B was committed in round rc, a quorum of validators
prepared B in rc; any later quorum of ROUND-CHANGEs shares an honest member with it, which reports
a prepared round >= rc, and the only block with a prepare quorum in any round >= rc is B. So a
proposer must re-propose the block of the highest prepared round its quorum reports, proven by
that round's prepare quorum, and only when nobody reports anything prepared may it choose freely.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.api import Verifier
from consensus.bft.messages import Claim, Kind, Vote, signing_bytes


class Invalid(Exception):
    """A certificate or justification that does not prove what it claims; `reason` for the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_votes(
    verifier: Verifier, validators: Sequence[str], chain_id: str, kind: Kind, height: int, round: int,
    digest: str, votes: Sequence[Vote], need: int,
) -> None:
    """Raise Invalid unless `votes` are at least `need` valid signatures by distinct validators."""
    message = signing_bytes(chain_id, kind, height, round, digest)
    seen: set[int] = set()
    for vote in votes:
        if vote.author >= len(validators) or vote.author in seen:
            raise Invalid("certificate_malformed")
        if not verifier.verify(validators[vote.author], message, vote.signature):
            raise Invalid("certificate_bad_signature")
        seen.add(vote.author)
    if len(seen) < need:
        raise Invalid("certificate_below_quorum")


def highest_prepared(claims: Sequence[Claim]) -> Claim | None:
    """The claim reporting the highest prepared round, or None when nobody prepared anything."""
    best: Claim | None = None
    for claim in claims:
        if claim.prepared_round >= 0 and (best is None or claim.prepared_round > best.prepared_round):
            best = claim
    return best


def check_claims(
    verifier: Verifier, validators: Sequence[str], chain_id: str, height: int, round: int,
    claims: Sequence[Claim], need: int,
) -> None:
    """Raise Invalid unless `claims` are `need` or more validly signed ROUND-CHANGEs for (height, round)."""
    seen: set[int] = set()
    for claim in claims:
        if claim.author >= len(validators) or claim.author in seen or claim.prepared_round >= round:
            raise Invalid("justification_malformed")
        message = signing_bytes(chain_id, Kind.ROUND_CHANGE, height, round, claim.prepared_hash,
                                claim.prepared_round)
        if not verifier.verify(validators[claim.author], message, claim.signature):
            raise Invalid("justification_bad_signature")
        seen.add(claim.author)
    if len(seen) < need:
        raise Invalid("justification_below_quorum")


def check_reproposal(
    verifier: Verifier, validators: Sequence[str], chain_id: str, height: int, digest: str,
    claims: Sequence[Claim], prepared_cert: Sequence[Vote], quorum: int,
) -> bool:
    """QBFT JustifyPrePrepare for a round > 0, given claims already checked by `check_claims`.

    Returns False when no claim reports a prepared block (the proposer chose freely; it must then
    carry no certificate). Returns True when the proposal re-proposes the block of the highest
    reported prepared round, which `prepared_cert` proves. Raises Invalid otherwise.
    """
    best = highest_prepared(claims)
    if best is None:
        if prepared_cert:
            raise Invalid("justification_malformed")
        return False
    top = [c for c in claims if c.prepared_round == best.prepared_round]
    if not any(c.prepared_hash == digest for c in top):
        raise Invalid("justification_ignores_prepared")
    check_votes(verifier, validators, chain_id, Kind.PREPARE, height, best.prepared_round, digest,
                prepared_cert, quorum)
    return True
