"""Stops the provider session a `session.create` cut short by a crash may have made.

The create writes a checkpoint before calling the provider. If its replica dies before the
answer's snapshot is in the state stream, the new owner sees that checkpoint with no provider
id: the provider may have created (and bills) a session that no event names and nobody would
ever stop, and the redelivered create makes another one. No provider's answer carries an id of
ours, so the orphan is found by time: a session a provider created in the window of the cut
create that neither this replica knows nor any session's latest snapshot names (every replica
follows the state stream, `StateTail`), after a grace that lets other replicas' creates of the
same moment write theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from worker.bus.publisher import PublishFailed
from worker.bus.state_tail import StateTail
from worker.handlers.context import Services
from worker.providers.base import ProviderError, SessionClosedError

log = logging.getLogger(__name__)

# Providers' created_at may have whole seconds, and their clocks are not ours.
MARGIN = timedelta(seconds=2)
RETRY_S = 5.0


class OrphanHunt:
    def __init__(self, services: Services, tail: StateTail, *, grace_s: float) -> None:
        self._services = services
        self._tail = tail
        self._grace_s = grace_s
        # One hunt at a time covers every create cut short until it runs.
        self._window: tuple[datetime, datetime] | None = None

    def suspect(self, since: datetime) -> None:
        """A create checkpointed at `since` was cut short: hunt until now, after the grace."""
        now = datetime.now(UTC)
        if self._window is None:
            self._window = (since, now)
            self._services.spawn(self._hunt_later(self._grace_s))
        else:
            self._window = (min(self._window[0], since), now)

    async def _hunt_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        assert self._window is not None
        since, until = self._window
        self._window = None
        try:
            await self.hunt(since, until)
        except (ProviderError, PublishFailed) as exc:
            log.warning("orphan hunt failed, trying again in %.0f s: %s", RETRY_S, exc)
            if self._window is None:
                self._window = (since, until)
                self._services.spawn(self._hunt_later(RETRY_S))
            else:
                self._window = (min(self._window[0], since), max(self._window[1], until))

    async def hunt(self, since: datetime, until: datetime) -> list[str]:
        """Stop the provider sessions created in [since, until] that nobody knows; their ids."""
        services = self._services
        known = {session.heygen_session_id for session in services.registry}
        suspects = [
            (provider, remote.provider_session_id)
            for provider in services.providers.values()
            for remote in await provider.list_live()
            if remote.created_at is not None
            and since - MARGIN <= remote.created_at <= until + MARGIN
            and remote.provider_session_id not in known
        ]
        if not suspects:
            return []
        # The latest snapshot of every session of every partition: one naming a suspect claims it.
        await self._tail.sync()
        orphans = [(p, sid) for p, sid in suspects if not self._tail.names(sid)]
        for provider, sid in orphans:
            log.warning("stopping %s session %s left by a create cut short", provider.name, sid)
            with contextlib.suppress(SessionClosedError):
                await provider.stop(sid, cause="error")
            services.metrics.leaked_sessions_stopped_total.inc()
        return [sid for _, sid in orphans]
