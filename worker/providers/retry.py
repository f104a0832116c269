"""When and how long to wait before repeating a failed HeyGen call.

Capped exponential backoff with full jitter, Retry-After as a floor, never past the caller's
deadline, and only where repeating the call cannot do something twice.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from random import random as _uniform
from typing import TypeVar

from worker.providers.base import ProviderError, RateLimitedError, TransportError, may_have_acted

T = TypeVar("T")

OnRetry = Callable[[str, ProviderError, int, float], None]


class Safety(enum.Enum):
    IDEMPOTENT = "idempotent"  # repeating it has the same effect as doing it once
    UNSAFE = "unsafe"  # repeating it may bill (new, create_token) or speak (task) twice


ENDPOINT_SAFETY: Mapping[str, Safety] = {
    "streaming.new": Safety.UNSAFE,
    "streaming.start": Safety.UNSAFE,
    "streaming.task": Safety.UNSAFE,
    "streaming.create_token": Safety.UNSAFE,
    "streaming.ice": Safety.IDEMPOTENT,
    "streaming.interrupt": Safety.IDEMPOTENT,
    "streaming.stop": Safety.IDEMPOTENT,
    "streaming.keep_alive": Safety.IDEMPOTENT,
    "streaming.list": Safety.IDEMPOTENT,
    "streaming.avatar.list": Safety.IDEMPOTENT,
}


def is_retried(endpoint: str, error: ProviderError) -> bool:
    """The retry table. An endpoint missing from ENDPOINT_SAFETY is treated as unsafe."""
    if isinstance(error, RateLimitedError):
        return True  # refused before any work was done
    if isinstance(error, TransportError) and not error.request_sent:
        return True  # the request provably never reached HeyGen
    if ENDPOINT_SAFETY.get(endpoint, Safety.UNSAFE) is Safety.UNSAFE:
        return False
    return may_have_acted(error)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """`max_attempts` counts the first call. A Retry-After longer than `max_retry_after` is not
    waited for: the error goes back to the caller, who owns the longer-term decision."""

    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_retry_after: float = 30.0
    on_retry: OnRetry | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = _uniform
    clock: Callable[[], float] = time.monotonic

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempt-1))]."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return self.random() * ceiling

    def delay_before_retry(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based), or None to give up."""
        delay = self.backoff(attempt)
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = max(delay, error.retry_after)
        return delay

    async def run(
        self,
        endpoint: str,
        call: Callable[[], Awaitable[T]],
        *,
        deadline: float | None,
        retried: Callable[[str, ProviderError], bool] = is_retried,
    ) -> T:
        """Await `call()`, repeating it on errors the table allows, within `deadline`.
        `retried` is the retry table (HeyGen's by default; another provider passes its own)."""
        attempt = 1
        while True:
            try:
                return await call()
            except ProviderError as error:
                if attempt >= self.max_attempts or not retried(endpoint, error):
                    raise
                delay = self.delay_before_retry(error, attempt)
                if delay is None or (deadline is not None and self.clock() + delay >= deadline):
                    raise
                if self.on_retry is not None:
                    self.on_retry(endpoint, error, attempt, delay)
                await self.sleep(delay)
                attempt += 1


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if value is None or not value.strip():
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
