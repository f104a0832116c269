"""Robust AMQP connections that fail over between the nodes of a RabbitMQ cluster.

`AMQP_URL` may name several brokers, comma-separated. aio-pika's robust connection reconnects
to the one URL it was given, so a connection whose node died would wait for that node forever;
here every reconnection attempt goes to the next URL in turn, and the first connection tries
each until one answers.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence

import aio_pika
from aio_pika import RobustConnection
from yarl import URL

log = logging.getLogger(__name__)

# Seconds between reconnection attempts: each goes to the next node, so a dead node costs one.
RECONNECT_INTERVAL_S = 1.0


def split_urls(value: str) -> list[str]:
    """The URLs of a comma-separated `AMQP_URL`, in order; at least one."""
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("AMQP_URL names no broker")
    for url in urls:
        if URL(url).scheme not in ("amqp", "amqps"):
            raise ValueError(
                f"AMQP_URL entries must be amqp:// or amqps:// URLs, got {redact(url)}"
            )
    return urls


# How RabbitMQ words a refusal: "NOT_FOUND - no queue ...", "INTERNAL_ERROR - Feature ...".
_REPLY = re.compile(r"^[A-Z_]+ - ")


def broker_reply(exc: BaseException) -> str | None:
    """What the broker said when it closed a channel or connection on us, if it said anything."""
    texts = [a for a in exc.args if isinstance(a, str)]
    return texts[-1] if texts and _REPLY.match(texts[-1]) else None


def redact(urls: URL | str) -> str:
    """The URL, or each of comma-separated URLs, without its password: fit for logs and errors."""
    return ",".join(_redact_one(part) for part in str(urls).split(","))


def _redact_one(url: str) -> str:
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparsable URL>"
    return str(parsed.with_password("***")) if parsed.password else url


class FailoverConnection(RobustConnection):
    """A robust connection whose every reconnection attempt goes to the next URL of `urls`."""

    urls: tuple[URL, ...] = ()

    async def _RobustConnection__connect_transport(self) -> None:
        # The one step of aio-pika's reconnection loop that reads `self.url`: pointed at the
        # next node before each attempt but the first. Its name is the base class's private
        # method, which the loop calls; tests/unit/test_failover.py fails if aio-pika renames it.
        if self.connection_attempt and len(self.urls) > 1:
            at = self.urls.index(self.url) if self.url in self.urls else -1
            self.url = self.urls[(at + 1) % len(self.urls)]
            log.info("reconnecting to RabbitMQ at %s", redact(self.url))
        await super()._RobustConnection__connect_transport()  # type: ignore[misc]


async def connect_failover(
    urls: Sequence[str],
    *,
    connection_name: str,
    ssl_context: ssl.SSLContext | None = None,
) -> FailoverConnection:
    """A robust connection to the first of `urls` that answers; raises the last refusal."""
    parsed = tuple(URL(url) for url in urls)
    failure: BaseException | None = None
    for url in parsed:
        try:
            connection = await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": connection_name},
                ssl_context=ssl_context,
                reconnect_interval=RECONNECT_INTERVAL_S,
                connection_class=FailoverConnection,
            )
        except (ConnectionError, OSError, aio_pika.exceptions.AMQPError) as exc:
            failure = exc
            if len(parsed) > 1:
                log.warning("RabbitMQ at %s does not answer: %r", redact(url), exc)
            continue
        connection.urls = parsed
        return connection
    assert failure is not None
    raise failure
