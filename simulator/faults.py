"""Injected faults: which request fails, and how (error answer, Retry-After, hang, reset)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from simulator.errors import ApiError, for_status
from simulator.settings import ANY_ENDPOINT, FaultSpec


@dataclass(slots=True)
class _Active:
    spec: FaultSpec
    remaining: int | None
    fired: int = 0


def fault_error(spec: FaultSpec) -> ApiError | None:
    """The error answer of a fault; None for a pure hang or a reset. No effect at all means 500."""
    if spec.reset or (spec.status is None and spec.hang_s > 0):
        return None
    error = for_status(spec.status or 500, spec.code, spec.message)
    if spec.retry_after is not None:
        error.retry_after = spec.retry_after
    return error


class FaultInjector:
    """Active faults in the order they were added; the first that fires wins."""

    def __init__(self, specs: Iterable[FaultSpec], rng: random.Random) -> None:
        self._rng = rng
        self._active: list[_Active] = []
        for spec in specs:
            self.add(spec)

    def add(self, spec: FaultSpec) -> None:
        self._active.append(_Active(spec, spec.count))

    def clear(self) -> None:
        self._active.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [
            {**a.spec.model_dump(mode="json"), "remaining": a.remaining, "fired": a.fired}
            for a in self._active
        ]

    def pick(self, endpoint: str) -> FaultSpec | None:
        """The fault that hits this request, if any; a fault with a count is used up."""
        for active in self._active:
            spec = active.spec
            if spec.endpoint != endpoint and spec.endpoint != ANY_ENDPOINT:
                continue
            if spec.rate < 1 and self._rng.random() >= spec.rate:
                continue
            active.fired += 1
            if active.remaining is not None:
                active.remaining -= 1
                if active.remaining == 0:
                    self._active.remove(active)
            return spec
        return None
