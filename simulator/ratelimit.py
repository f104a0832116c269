"""A token bucket per API key, answering 429 with Retry-After when a key sends too fast."""

from __future__ import annotations

import math
import time

from simulator.errors import rate_limited
from simulator.state import Clock


class RateLimiter:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        # api key -> (tokens left, time they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, api_key: str, rate_per_s: float, burst: int) -> None:
        """Spend one token of the key's bucket or raise the 429 answer."""
        now = self._clock()
        tokens, then = self._buckets.get(api_key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate_per_s)
        if tokens < 1:
            self._buckets[api_key] = (tokens, now)
            # Whole seconds, as HTTP's Retry-After wants.
            raise rate_limited(retry_after=math.ceil((1 - tokens) / rate_per_s))
        self._buckets[api_key] = (tokens - 1, now)

    def reset(self) -> None:
        self._buckets.clear()
