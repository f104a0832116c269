"""Fixtures shared by every test: a private RabbitMQ vhost per test."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contracts.common import LIMITS

# The RabbitMQ 4 node `scripts/rabbitmq4.sh` runs (AMQP 5682, management 15682) unless told.
RABBIT_HOST = os.environ.get("TEST_RABBIT_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("TEST_RABBIT_PORT", "5682"))
RABBIT_MGMT = os.environ.get("TEST_RABBIT_MGMT", f"http://{RABBIT_HOST}:{RABBIT_PORT + 10000}")
# The broker's own CLI, for what only it can do (close a vhost's connections, for instance).
RABBITMQCTL = shlex.split(
    os.environ.get("TEST_RABBITMQCTL", f"{Path(__file__).parents[1]}/scripts/rabbitmq4.sh ctl r4")
)
RABBIT_USER = os.environ.get("TEST_RABBIT_USER", "guest")
RABBIT_PASSWORD = os.environ.get("TEST_RABBIT_PASSWORD", "guest")


@contextlib.asynccontextmanager
async def private_vhost(
    mgmt_url: str, prefix: str, user: str = RABBIT_USER, password: str = RABBIT_PASSWORD
) -> AsyncIterator[str]:
    """A vhost made for one test through a broker's management API, deleted afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=mgmt_url, auth=(user, password), timeout=30) as mgmt:
        (await mgmt.put(f"/api/vhosts/{vhost}")).raise_for_status()
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        (await mgmt.put(f"/api/permissions/{vhost}/{user}", json=perms)).raise_for_status()
        try:
            yield vhost
        finally:
            with contextlib.suppress(httpx.HTTPError):  # a test may have deleted it already
                await mgmt.delete(f"/api/vhosts/{vhost}")


@pytest.fixture
async def amqp_url() -> AsyncIterator[str]:
    """An AMQP URL to a vhost made for this test alone, deleted afterwards."""
    async with private_vhost(RABBIT_MGMT, "test") as vhost:
        yield f"amqp://{RABBIT_USER}:{RABBIT_PASSWORD}@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"


@pytest.fixture(autouse=True)
def _restore_limits() -> Iterator[None]:
    """A worker started by a test configures the process-wide contract limits: undo it."""
    saved = dataclasses.replace(LIMITS)
    yield
    LIMITS.max_text_chars = saved.max_text_chars
    LIMITS.max_message_bytes = saved.max_message_bytes
