"""Raft-only limits. Timing (election timeout, heartbeat) comes from `consensus.api.EngineConfig`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaftLimits:
    """Bounds on what one Raft node keeps and sends; defaults suit blocks up to 8 MiB."""

    # Committed entries kept in the log (and on disk) after the block store has them, so a leader
    # can repair a follower that is a few blocks behind without block sync. Farther behind than
    # this, the leader tells the follower to sync (see `SyncHint`).
    retained_entries: int = 64
    # One AppendEntries carries at most this many entries and certificates ...
    max_append_entries: int = 64
    # ... and at most this many bytes of blocks, except that one entry always fits (a block is
    # bounded by EngineConfig.max_block_bytes), so a frame is at most about one block plus this.
    max_append_bytes: int = 4 * 1024 * 1024
    # Each election a node starts without having heard from a leader since its last one doubles its
    # randomized election timeout, up to this factor: when round trips outgrow the configured
    # timeout, candidates would otherwise time out before their votes come back, indefinitely.
    max_election_backoff: int = 8

    def __post_init__(self) -> None:
        if self.retained_entries < 0 or self.max_append_entries < 1 or self.max_append_bytes < 1 \
                or self.max_election_backoff < 1:
            raise ValueError("RaftLimits needs retained_entries >= 0 and max_append_entries, "
                             "max_append_bytes, max_election_backoff >= 1")
