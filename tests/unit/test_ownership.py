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
        lambda: "amqp://guest:guest@127.0.0.1:5672/v",
        lambda: {0: "t0", 1: "t1"},
        transport=transport,
    )
    try:
        assert await probe.owned() == {0}
        assert probe.replicas == 2
    finally:
        await probe.aclose()


async def test_the_api_asked_is_the_one_of_the_node_connected_to_now() -> None:
    """After a cluster failover the consumers are on another node: its API is asked."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json=CONSUMERS)

    node = ["amqp://u:p@node-a:5682/v%2Fx"]
    probe = OwnershipProbe(
        lambda: node[0], lambda: {0: "t0"}, transport=httpx.MockTransport(answer)
    )
    try:
        await probe.owned()
        node[0] = "amqps://u:p@node-b/v%2Fx"
        await probe.owned()
    finally:
        await probe.aclose()
    assert asked == [
        "http://node-a:15682/api/consumers/v%2Fx",
        "https://node-b:15671/api/consumers/v%2Fx",
    ]
