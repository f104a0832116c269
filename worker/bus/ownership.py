"""Which partitions this replica owns, and the dead-letter depth, from the management API.

With single-active-consumer every replica registers on every partition, but AMQP tells a
consumer nothing when it becomes the active one; the management API does (`active`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import quote, unquote, urlsplit

import httpx

from contracts.topology import partition_queue

log = logging.getLogger(__name__)

PARTITION_PREFIX = partition_queue(0)[:-1]
REQUEST_TIMEOUT_S = 5.0


def management_url_for(amqp_url: str) -> str:
    """The management API next to an AMQP broker: same host, the AMQP port plus 10,000 (RabbitMQ's
    defaults: 5672 and 15672, 5671 and 15671 with TLS)."""
    parts = urlsplit(amqp_url)
    tls = parts.scheme == "amqps"
    scheme, amqp_port = ("https", 5671) if tls else ("http", 5672)
    return f"{scheme}://{parts.hostname or 'localhost'}:{(parts.port or amqp_port) + 10000}"


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _field(consumer: dict[str, object], section: str, key: str) -> object:
    """consumer[section][key]; a section the API has no details for yet is an empty list."""
    details = consumer.get(section)
    return details.get(key) if isinstance(details, dict) else None


class OwnershipProbe:
    def __init__(
        self,
        amqp_url: Callable[[], str],
        consumer_tags: Callable[[], dict[int, str]],
        *,
        management_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`amqp_url` gives the URL of the node the consumers are connected to now: without
        `management_url`, the API asked is that node's, which follows a cluster failover."""
        parts = urlsplit(amqp_url())
        self._vhost = vhost_of(amqp_url())
        self._amqp_url = amqp_url
        self._management_url = management_url
        self._consumer_tags = consumer_tags
        self._http = httpx.AsyncClient(
            auth=(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
            timeout=REQUEST_TIMEOUT_S,
            transport=transport,
        )
        self._warned = False
        # Connections consuming partition queues, as of the last `owned()`: the replica count.
        self.replicas = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def owned(self) -> set[int] | None:
        """Partitions whose consumer of ours is the active one; None if the API can't say."""
        tags = self._consumer_tags()
        try:
            answer = await self._get(f"/api/consumers/{quote(self._vhost, safe='')}")
            answer.raise_for_status()
            consumers = answer.json()
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            if not self._warned:
                log.warning("partition ownership unknown (management API: %s)", exc)
                self._warned = True
            return None
        active = {c.get("consumer_tag") for c in consumers if c.get("active")}
        self.replicas = len(
            {
                _field(c, "channel_details", "connection_name")
                for c in consumers
                if str(_field(c, "queue", "name")).startswith(PARTITION_PREFIX)
            }
        )
        return {partition for partition, tag in tags.items() if tag in active}

    async def queue_depth(self, queue: str) -> int | None:
        """Messages ready in `queue`, or None if the API can't say."""
        try:
            answer = await self._get(
                f"/api/queues/{quote(self._vhost, safe='')}/{quote(queue, safe='')}"
            )
            answer.raise_for_status()
            return int(answer.json().get("messages", 0))
        except (httpx.HTTPError, ValueError, TimeoutError):
            return None

    async def _get(self, path: str) -> httpx.Response:
        # A bound of our own besides httpx's: on the loaded test machine (worker on uvloop) a
        # request to the management API hung for a minute and stopped the ownership poll, so
        # no partition was handed over any more.
        base = self._management_url or management_url_for(self._amqp_url())
        async with asyncio.timeout(REQUEST_TIMEOUT_S + 1):
            return await self._http.get(base.rstrip("/") + path)
