"""The peer: the consumer a team would write by hand from HeyGen's docs (`python -m bench.peer`).

A minimal FastStream app: one subscriber per partition queue (same quorum queues, same
prefetch as the worker), each speak POSTed to `streaming.task` with a plain httpx client and
the answer published to `avatar.events` (publisher confirms, FastStream's default), then acked
by FastStream. No sessions, order, dedupe, snapshots or metrics: the work a speak needs, only.
Its HeyGen session id is the command's session id (the benchmark opens them beforehand).
Settings from the environment: BENCH_AMQP_URL, BENCH_PARTITIONS, BENCH_PREFETCH,
BENCH_HEYGEN_URL, BENCH_HEYGEN_KEY. Kept in bench/, not shipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import httpx
from faststream import FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitExchange, RabbitMessage, RabbitQueue

from bench.load import ANSWER_TYPE
from contracts.topology import EVENTS_EXCHANGE, partition_queue
from worker.loop import run

env = os.environ
HTTP_CONCURRENCY = 64
# Per-message log lines at DEBUG: not written at the default INFO, as in the worker.
broker = RabbitBroker(
    env.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1/"), log_level=logging.DEBUG
)
app = FastStream(broker)
events = RabbitExchange(EVENTS_EXCHANGE, declare=False)
heygen = httpx.AsyncClient(
    base_url=env.get("BENCH_HEYGEN_URL", "http://127.0.0.1:8090"),
    headers={"X-Api-Key": env.get("BENCH_HEYGEN_KEY", "")},
    limits=httpx.Limits(max_connections=HTTP_CONCURRENCY),
)
# Requests in flight bounded as in the worker (WORKER_HTTP_CONCURRENCY): with hundreds of
# deliveries waiting in httpcore's pool instead, its request queue makes the peer spin at
# 0-10 speaks/s (measured), which would flatter the worker.
http_slots = asyncio.Semaphore(HTTP_CONCURRENCY)


async def on_speak(body: dict[str, Any], message: RabbitMessage) -> None:
    task = {
        "session_id": body["session_id"],
        "text": body["text"],
        "task_type": body["task_type"],
        "task_mode": body["task_mode"],
    }
    async with http_slots:
        response = await heygen.post("/v1/streaming.task", json=task)
    response.raise_for_status()
    data = response.json()["data"]
    answer = {
        "type": ANSWER_TYPE,
        "session_id": body["session_id"],
        "causation_id": body["command_id"],
        "correlation_id": body.get("correlation_id"),
        "task_id": data["task_id"],
        "duration_ms": data.get("duration_ms"),
        "task_type": body["task_type"],
        "task_mode": body["task_mode"],
        "characters": len(body["text"]),
    }
    await broker.publish(
        answer,
        exchange=events,
        routing_key=f"{ANSWER_TYPE}.{body['session_id']}",
        correlation_id=message.correlation_id,
        persist=True,
        mandatory=False,
    )


for index in range(int(env.get("BENCH_PARTITIONS", "8"))):
    broker.subscriber(
        RabbitQueue(partition_queue(index), declare=False),
        channel=Channel(
            prefetch_count=int(env.get("BENCH_PREFETCH", "64")), channel_number=index + 10
        ),
    )(on_speak)


if __name__ == "__main__":
    run(app.run())
