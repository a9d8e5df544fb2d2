"""`ObserverEngine`: the engine of a node whose key is not a validator, under an engine that has no
passive mode of its own (Raft refuses to run without a seat).

An observer takes no part in consensus: it proposes nothing, votes on nothing and sends nothing.
Its chain advances by block sync alone (every certificate checked there), so every event here
only moves its idea of the tip forward. Pure and synchronous like the engines.
"""

from __future__ import annotations

from typing import Any

from consensus.api import Action, ChainAdvanced, EngineContext, Event, Received


class ObserverEngine:
    def __init__(self, ctx: EngineContext) -> None:
        self._height = ctx.tip.height
        self.counters: dict[str, int] = {"dropped_not_a_validator": 0}

    def step(self, event: Event) -> list[Action]:
        if isinstance(event, ChainAdvanced):
            self._height = max(self._height, event.tip.height)
        elif isinstance(event, Received):
            self.counters["dropped_not_a_validator"] += 1  # an observer reads no consensus traffic
        return []

    def status(self) -> dict[str, Any]:
        return {"is_validator": False, "height": self._height + 1}
