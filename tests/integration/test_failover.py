"""AMQP_URL with several brokers: the first that answers is used, and a lost connection comes
back on the next one (two TCP proxies in front of the one test broker stand in for two nodes)."""

from __future__ import annotations

import aio_pika
from yarl import URL

from tests.integration.conftest import free_port, wait_until
from tests.reliability.proxy import Mode, TcpProxy
from worker.bus.connection import connect_failover


def via(url: str, port: int) -> str:
    return str(URL(url).with_port(port))


async def test_the_first_broker_that_answers_is_used(amqp_url: str) -> None:
    dead = via(amqp_url, free_port())
    connection = await connect_failover([dead, amqp_url], connection_name="test-failover")
    try:
        assert connection.url.port == URL(amqp_url).port
    finally:
        await connection.close()


async def test_a_lost_connection_comes_back_on_the_next_broker(amqp_url: str) -> None:
    broker = URL(amqp_url).port
    assert broker is not None
    first, second = TcpProxy(broker), TcpProxy(broker)
    await first.start()
    await second.start()
    connection = await connect_failover(
        [via(amqp_url, first.port), via(amqp_url, second.port)], connection_name="test-failover"
    )
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("failover-test", durable=True)
        first.mode = Mode.REFUSE  # the node is gone: it neither keeps nor takes connections
        first.reset()

        async def back_on_second() -> bool:
            return connection.url.port == second.port and connection.connected.is_set()

        await wait_until(back_on_second, 15)

        async def published() -> bool:
            # The robust channel is restored there, a moment after the connection.
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue.name,
                    timeout=5,
                )
            except aio_pika.exceptions.ChannelInvalidStateError:
                return False
            return True

        await wait_until(published, 15)
        assert (await queue.get(timeout=5)).body == b"x"
    finally:
        await connection.close()
        await first.close()
        await second.close()
