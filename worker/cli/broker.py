"""Short-lived broker connections for the CLI, with broker failures turned into one-line errors."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

from contracts.client import CommandNotRoutedError
from worker.bus.connection import broker_reply, redact, split_urls
from worker.cli.errors import CliError, ExitCode

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
START_WORKER_HINT = "start the worker once (`heygen-worker run`): it declares the topology"


def default_amqp_url() -> str:
    return os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL


CONNECTION_NAME = "heygen-worker-cli"  # how the management UI names the CLI's connections


@asynccontextmanager
async def connect(url: str, timeout: float) -> AsyncIterator[AbstractConnection]:  # noqa: ASYNC109
    """A plain (not robust) connection to the first of the URLs that answers: a CLI call should
    fail fast rather than retry forever."""
    try:
        urls = split_urls(url)
    except ValueError as exc:
        raise CliError(f"--amqp-url: {exc}", ExitCode.USAGE) from None
    connection = await _first_answering(urls, timeout)
    # A plain connection that the broker closes leaves consumers waiting forever: cancel the
    # command instead, so a tail does not sit silently on a dead connection.
    task = asyncio.current_task()
    lost: list[BaseException] = []

    def on_close(_sender: object, exc: BaseException | None = None) -> None:
        if exc is not None and task is not None:
            lost.append(exc)
            task.cancel()

    connection.close_callbacks.add(on_close)
    try:
        with broker_errors():
            yield connection
    except asyncio.CancelledError:
        if not lost or task is None:
            raise
        task.uncancel()
        raise CliError(f"lost the connection to RabbitMQ: {_broker_text(lost[0])}") from None
    finally:
        connection.close_callbacks.discard(on_close)
        await connection.close()


async def _first_answering(urls: list[str], timeout: float) -> AbstractConnection:  # noqa: ASYNC109
    for url in urls:
        try:
            return await aio_pika.connect(
                url, timeout=timeout, client_properties={"connection_name": CONNECTION_NAME}
            )
        except (TimeoutError, aiormq.exceptions.AMQPError, OSError) as exc:
            failure = f"cannot connect to {redact(url)}: {_connect_reason(exc)}"
    raise CliError(failure)


def _connect_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out (is RabbitMQ running and reachable?)"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return "login refused (check the user and password)"
    if isinstance(exc, aiormq.exceptions.ProtocolSyntaxError):
        # RabbitMQ closes the handshake when the vhost is missing or not permitted.
        return "the broker closed the connection (does the vhost exist, may this user use it?)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (is RabbitMQ running? `make rabbitmq` starts one)"
    return str(exc) or type(exc).__name__


@contextmanager
def broker_errors() -> Iterator[None]:
    """Broker refusals after connecting: missing exchanges or queues, lost connection."""
    try:
        yield
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise CliError(f"{_broker_text(exc)}: {START_WORKER_HINT}") from None
    except CommandNotRoutedError as exc:
        raise CliError(f"{exc} ({START_WORKER_HINT})") from None
    except (aiormq.exceptions.AMQPError, ConnectionError) as exc:
        raise CliError(f"broker error: {_broker_text(exc)}") from None


def _broker_text(exc: BaseException) -> str:
    return broker_reply(exc) or repr(exc)
