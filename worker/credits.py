"""Credit balance and burn: the providers' balances polled into a gauge, and the credits a
minute the live sessions burn at each provider's published rate (read at scrape time). The
alert `HeyGenWorkerCreditsRunningOut` divides one by the other."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from worker.handlers.context import Services
from worker.providers.base import ProviderError

log = logging.getLogger(__name__)


class CreditWatch:
    def __init__(self, services: Services, *, poll_s: float) -> None:
        self._services = services
        self._poll_s = poll_s
        metrics = services.metrics
        for name in services.providers:
            metrics.credit_burn_per_minute.labels(name).set_function(
                partial(self.burn_per_minute, name)
            )

    def burn_per_minute(self, provider: str) -> float:
        """Credits a minute the live sessions of `provider` burn now."""
        rates = self._services.providers[provider]
        return sum(
            rates.credit_rate(s.mode) or 0.0
            for s in self._services.registry
            if s.live and s.provider == provider
        )

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self._poll_s)

    async def poll(self) -> None:
        for name, provider in self._services.providers.items():
            with contextlib.suppress(ProviderError):
                left = await provider.credits_left()
                if left is not None:
                    self._services.metrics.credits_left.labels(name).set(left)
