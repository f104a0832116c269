"""OwnershipProbe against management API answers (httpx MockTransport)."""

from __future__ import annotations

import httpx

from worker.bus.ownership import OwnershipProbe

CONSUMERS = [
    {
        "consumer_tag": "t0",
        "active": True,
        "queue": {"name": "avatar.commands.p0"},
        "channel_details": {"connection_name": "w1-consume"},
    },
    {
        "consumer_tag": "t1",
        "active": False,
        "queue": {"name": "avatar.commands.p1"},
        "channel_details": {"connection_name": "w2-consume"},
    },
    # A consumer on a connection the API has no statistics for yet: details are an empty list.
    {"consumer_tag": "t2", "active": True, "queue": [], "channel_details": []},
]


async def test_owned_partitions_and_replicas_with_details_missing() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=CONSUMERS))
    probe = OwnershipProbe(
        "amqp://guest:guest@127.0.0.1:5672/v", lambda: {0: "t0", 1: "t1"}, transport=transport
    )
    try:
        assert await probe.owned() == {0}
        assert probe.replicas == 2
    finally:
        await probe.aclose()
