"""Ownership: the broker-validated user_id of session.create owns the session (issue 7)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest

from contracts.client import publish_command
from contracts.commands import CommandBase, SessionCreate, SessionSpeak, SessionStop
from contracts.events import CommandRejected, Event
from tests.conftest import RABBIT_MGMT, RABBIT_PASSWORD, RABBIT_USER
from tests.integration.conftest import EventTap, Producer, worker_settings
from worker.app import Worker

ADMIN = "ops-admin"


@pytest.fixture
async def principals(amqp_url: str) -> AsyncIterator[dict[str, str]]:
    """Two producer users and an admin user on the test's vhost: name -> AMQP URL."""
    parts = urlsplit(amqp_url)
    vhost = parts.path[1:]
    suffix = uuid.uuid4().hex[:8]
    names = {"alice": f"alice-{suffix}", "bob": f"bob-{suffix}", "admin": f"{ADMIN}-{suffix}"}
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    async with httpx.AsyncClient(base_url=RABBIT_MGMT, auth=(RABBIT_USER, RABBIT_PASSWORD)) as mgmt:
        for user in names.values():
            (
                await mgmt.put(f"/api/users/{user}", json={"password": "pw", "tags": ""})
            ).raise_for_status()
            (await mgmt.put(f"/api/permissions/{vhost}/{user}", json=perms)).raise_for_status()
        try:
            yield {
                role: f"amqp://{user}:pw@{parts.hostname}:{parts.port or 5672}/{vhost}"
                for role, user in names.items()
            } | {f"{role}_name": user for role, user in names.items()}
        finally:
            for user in names.values():
                await mgmt.delete(f"/api/users/{user}")


@pytest.fixture
def worker_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return getattr(request, "param", {})


async def send_as(url: str, user: str, command: CommandBase) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await publish_command(channel, command, user_id=user)


async def terminal(producer: Producer, command: CommandBase) -> Event:
    return await producer.tap.wait_for(
        lambda e: (
            e.causation_id == command.command_id
            and e.type in {"session.ready", "speech.started", "session.stopped", "command.rejected"}
        )
    )


async def test_only_the_owner_controls_a_session(
    producer: Producer, principals: dict[str, str]
) -> None:
    alice, bob = principals["alice_name"], principals["bob_name"]
    create = SessionCreate(session_id="alices", avatar_id="a")
    await send_as(principals["alice"], alice, create)
    assert (await terminal(producer, create)).type == "session.ready"

    for command in (
        SessionSpeak(session_id="alices", text="hijack"),
        SessionStop(session_id="alices"),
    ):
        await send_as(principals["bob"], bob, command)
        rejected = await terminal(producer, command)
        assert isinstance(rejected, CommandRejected)
        assert rejected.code == "forbidden"
    # Without a user_id nobody is the owner either.
    anonymous = SessionSpeak(session_id="alices", text="anonymous")
    rejected = await producer.call(anonymous)
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "forbidden"

    own = SessionSpeak(session_id="alices", text="mine")
    await send_as(principals["alice"], alice, own)
    assert (await terminal(producer, own)).type == "speech.started"


async def test_broker_refuses_a_forged_user_id(
    principals: dict[str, str], producer: Producer
) -> None:
    with pytest.raises(aio_pika.exceptions.ChannelClosed, match="user_id"):
        await send_as(
            principals["bob"], principals["alice_name"], SessionSpeak(session_id="x", text="forged")
        )


async def test_admin_may_act_on_any_session(
    amqp_url: str, simulator: Any, principals: dict[str, str]
) -> None:
    worker = Worker(
        worker_settings(amqp_url, simulator, admins=frozenset({principals["admin_name"]}))
    )
    await worker.start()
    try:
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            tap = EventTap()
            queue = await channel.declare_queue("", exclusive=True)
            await queue.bind("avatar.events", routing_key="#")
            await queue.consume(tap.on_message)
            producer = Producer(channel, tap)
            create = SessionCreate(session_id="owned", avatar_id="a")
            await send_as(principals["alice"], principals["alice_name"], create)
            await terminal(producer, create)
            stop = SessionStop(session_id="owned", reason="ops")
            await send_as(principals["admin"], principals["admin_name"], stop)
            assert (await terminal(producer, stop)).type == "session.stopped"
    finally:
        await worker.shutdown()


@pytest.mark.parametrize("worker_overrides", [{"require_user_id": True}], indirect=True)
async def test_user_id_can_be_required(producer: Producer) -> None:
    rejected = await producer.call(SessionCreate(session_id="anon", avatar_id="a"))
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "forbidden"
