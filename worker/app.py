"""The worker's lifecycle, owned by one class: start, serve, drain on SIGTERM, shut down."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from functools import partial
from itertools import product
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import httpx
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import CollectorRegistry

from contracts.common import SessionState, StopReason, configure_limits
from worker.bus.connection import FailoverConnection, connect_failover
from worker.bus.consumer import Consumer
from worker.bus.ownership import OwnershipProbe
from worker.bus.publisher import Publisher
from worker.bus.state_stream import StateStream
from worker.bus.state_tail import StateTail
from worker.bus.topology import TopologySpec, declare_topology
from worker.credits import CreditWatch
from worker.dispatch import Dispatcher, build_dispatcher
from worker.events import EventEmitter
from worker.exit_codes import ExitCode
from worker.handlers.context import Policy, Services
from worker.handlers.lifecycle import end_session
from worker.handover import Handover
from worker.observability.http import HealthServer
from worker.observability.metrics import PROVIDERS, Metrics
from worker.observability.tracing import inject_context
from worker.observer import Observer
from worker.orphans import OrphanHunt
from worker.partitions import PartitionWatch
from worker.pool import PoolSettings, SessionPool
from worker.provider_setup import ProviderSetup
from worker.providers.base import Provider
from worker.sessions.registry import Registry
from worker.sessions.session import LIVE_STATES
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

TASK_EXIT_S = 5.0
# A shutdown ends within the drain grace plus this, whatever the broker does (unreachable, the
# vhost gone, publishes blocked by an alarm): past it the process exits, non-zero.
EXIT_MARGIN_S = 4.0
GC_YOUNG_THRESHOLD = 20_000
# A rebalance gives a partition's held commands this many shutdown graces to finish: within
# the next owner's patience (`Handover`: three times the grace plus 5 s).
REBALANCE_GRACE_FACTOR = 2


class Worker:
    """One replica. `start()` brings it up, `run()` serves until a signal, then drains.

    Tests drive `start()` and `shutdown()` directly; `transport` replaces HeyGen's HTTP
    transport (the httpx seam), `registry` the Prometheus registry.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._transport = transport
        # What `start` brought up, closed in the reverse order by `shutdown`.
        self._stack = AsyncExitStack()
        self._stop_requested = asyncio.Event()
        self._draining = False
        # What the shutdown is doing, for the log line when its bound passes.
        self._step = "not started"
        self._consume_conn: FailoverConnection | None = None
        self._publish_conn: AbstractRobustConnection | None = None
        self._consumer: Consumer | None = None
        self.services: Services | None = None
        self.dispatcher: Dispatcher | None = None
        self.health: HealthServer | None = None
        self.handover: Handover
        self.orphans: OrphanHunt
        self._tasks: list[asyncio.Task[None]] = []
        # The partitions the shutdown hands over, taken when it stops consuming.
        self._leaving: set[int] = set()
        self.partition_watch: PartitionWatch

    async def start(self) -> None:
        """Bring the worker up. Each part registers how it ends as it starts, so `shutdown`
        undoes exactly what started, in the reverse order: stop consuming and drain, stop the
        background work, seal and announce the partitions, then close what they used."""
        s = self.settings
        configure_limits(max_text_chars=s.max_text_chars, max_message_bytes=s.max_message_bytes)
        self.health = HealthServer(
            self.registry, self.readiness, host=s.metrics_host, port=s.metrics_port
        )
        await self.health.start()
        self._on_exit("stopping the health server", self.health.stop)
        providers = ProviderSetup(
            s, self.metrics, self._stack, transport=self._transport
        ).providers()
        consume_conn = self._consume_conn = await self._connect("consume")
        self._publish_conn = await self._connect("publish")
        # Reading the state stream has a connection of its own: right after a broker restart
        # the stream can be unavailable for a while, and a robust connection whose channel
        # cannot be restored fails its whole reconnection, which once left the publishing
        # channel closed for good.
        state_conn = await self._connect("state")
        await declare_topology(
            consume_conn,
            TopologySpec(s.partitions, s.delivery_limit, state_max_age=s.state_retention),
        )
        publisher = Publisher(
            self._publish_conn,
            timeout=s.publish_timeout_s,
            on_failure=self.metrics.event_publish_failures_total.inc,
            on_confirmed=self.metrics.observe_confirm,
        )
        await publisher.start()
        self._on_exit("closing the publisher", publisher.close)
        services = self.services = self._services(providers, publisher)
        # Every live session is re-snapshotted each refresh, so two of them hold them all.
        window = timedelta(seconds=2 * s.snapshot_refresh_s + 60)
        tail = StateTail(state_conn, publisher, window=window)
        self.orphans = services.orphans = OrphanHunt(services, tail, grace_s=s.orphan_grace_s)
        handover = self.handover = Handover(
            services,
            StateStream(publisher),
            tail,
            s.worker_id,
            refresh_s=s.snapshot_refresh_s,
            drain_wait_s=s.shutdown_grace_s + 5,
            prefetch=s.prefetch,
        )
        await handover.start()
        self._on_exit("closing the state tail", handover.close)
        services.emitter.after_session_event = handover.save
        # A replica cut off from the broker may have lost its partitions: stop acting on them.
        consume_conn.close_callbacks.add(lambda *_: handover.release_all())
        dispatcher = self.dispatcher = build_dispatcher(
            services,
            handover=handover,
            tail=tail,
            publisher=publisher,
            own_user=_broker_user(s.amqp_urls[0]),
            max_message_bytes=s.max_message_bytes,
            dedup_capacity=s.dedup_capacity,
        )
        consumer = self._consumer = Consumer(
            consume_conn,
            publisher,
            dispatcher.handle,
            partitions=s.partitions,
            prefetch=s.prefetch,
            worker_id=s.worker_id,
            on_dead_letter=lambda reason: self.metrics.dead_letters_total.labels(
                reason=reason
            ).inc(),
            on_partition_lost=handover.release,
        )
        # The management API of the node the consumers are on: another one after a failover.
        probe = OwnershipProbe(
            lambda: str(consume_conn.url),
            consumer.consumer_tags,
            management_url=s.rabbitmq_management_url,
        )
        self._on_exit("closing the management API client", probe.aclose)
        self.partition_watch = PartitionWatch(
            probe,
            handover,
            consumer,
            dispatcher,
            publisher,
            self.metrics,
            partitions=s.partitions,
            poll_s=s.ownership_poll_s,
            # A loaded replica can take longer than the shutdown grace.
            rebalance_grace_s=REBALANCE_GRACE_FACTOR * s.shutdown_grace_s,
        )
        self._on_exit("closing the consumers", consumer.close)
        self._on_exit(
            "announcing the partitions released",
            lambda: handover.announce_released(self._leaving, publisher),
        )
        self._on_exit("sealing the partitions", self._seal)
        pool = SessionPool(
            services,
            PoolSettings(
                keepalive_interval_s=s.keepalive_interval_s,
                keepalive_concurrency=s.keepalive_concurrency,
                reconcile_interval_s=s.reconcile_interval_s,
                leak_grace_s=s.leak_grace_s,
                reap_unknown_sessions=s.reap_unknown_sessions,
            ),
        )
        credits = CreditWatch(services, poll_s=s.credits_poll_s)
        for work in (
            pool.run(),
            Observer(services).run(),
            credits.run(),
            handover.refresh_forever(),
        ):
            self._tasks.append(asyncio.create_task(work))
        self._on_exit("stopping background work", partial(self._stop_background, services))
        if s.stop_sessions_on_shutdown:
            self._on_exit("stopping the sessions", partial(self._stop_sessions, services))
        self._on_exit("finishing in-flight commands", lambda: dispatcher.drain(s.shutdown_grace_s))
        self._track_sessions(services.registry)
        self.metrics.partitions.set(s.partitions)
        self.metrics.max_sessions.set(s.max_sessions)
        self.metrics.credit_alert_seconds.set(s.credit_alert_minutes * 60)
        await consumer.start()
        # Polled once consuming: the broker only then says which partitions are ours.
        self._tasks.append(asyncio.create_task(self.partition_watch.run()))
        self._on_exit(
            "announcing the drain and cancelling the consumers",
            partial(self._stop_consuming, consumer),
        )
        log.info(
            "worker %s consuming %d partitions (prefetch %d)", s.worker_id, s.partitions, s.prefetch
        )

    def _on_exit(self, step: str, callback: Callable[[], Awaitable[object]]) -> None:
        """Run `callback` at shutdown, before whatever started earlier is undone."""

        async def run() -> None:
            self._step = step
            await callback()

        self._stack.push_async_callback(run)

    def _services(self, providers: dict[str, Provider], publisher: Publisher) -> Services:
        s = self.settings
        metrics, published = self.metrics, self.metrics.events_published_total
        emitter = EventEmitter(
            publisher,
            s.worker_id,
            decorate_headers=inject_context,
            on_published=lambda e: metrics.child(published, e.type).inc(),
        )
        return Services(
            providers=providers,
            registry=Registry(s.max_sessions),
            emitter=emitter,
            policy=Policy(
                idle_timeout_s=s.idle_timeout_s,
                max_duration_s=s.max_duration_s,
                credits_per_minute=s.credits_per_minute,
                reconnect_attempts=s.reconnect_attempts,
                default_provider=s.default_provider,
                speech_start_timeout_s=s.speech_start_timeout_s,
                admins=s.admins,
                require_user_id=s.require_user_id,
            ),
            metrics=self.metrics,
        )

    async def _connect(self, role: str) -> FailoverConnection:
        s = self.settings
        ssl_context = None
        if s.amqp_ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(s.amqp_ca_file))
        connection = await connect_failover(
            s.amqp_urls, connection_name=f"{s.worker_id}-{role}", ssl_context=ssl_context
        )
        gauge = self.metrics.bus_connected.labels(connection=role)
        gauge.set(1)
        connection.close_callbacks.add(lambda *_: gauge.set(0))
        connection.reconnect_callbacks.add(lambda *_: gauge.set(1))
        self._on_exit(f"closing the {role} connection", connection.close)
        return connection

    def _track_sessions(self, registry: Registry) -> None:
        """Live sessions by provider and state, computed at scrape time from the registry."""
        for provider, state in product(PROVIDERS, LIVE_STATES):
            self.metrics.sessions.labels(provider, state.value).set_function(
                partial(_count_in_state, registry, provider, state)
            )

    def readiness(self) -> tuple[bool, str]:
        if self._draining:
            return False, "draining"
        for role, conn in (("consume", self._consume_conn), ("publish", self._publish_conn)):
            if conn is None or conn.is_closed or not conn.connected.is_set():
                return False, f"{role} connection down"
        if self._consumer is None or not self._consumer.consuming:
            return False, "consumers not registered on every partition"
        return True, "ready"

    def request_stop(self) -> None:
        if self._stop_requested.is_set():
            # An operator who signals twice wants out now; the broker requeues what was unacked.
            log.error("second signal: exiting at once, while %s", self._step)
            _exit_now(ExitCode.INTERRUPTED)
        self._stop_requested.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then drain and shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            # What startup built lives as long as the process: the collector need not walk it
            # again. Commands allocate fast and their objects die young: collect them less
            # often than Python's default 700 allocations. Each young pause gets longer (22 ms
            # seen), the total cheaper: three interleaved runs each, 565 against 484 speaks/s
            # on average and a lower p99 at 200/s (bench/RESULTS.md).
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
            await self._stop_requested.wait()
            log.info("stop requested: draining")
        finally:
            # Not asyncio.timeout: cancelling the shutdown waits for what it is in, and aio-pika's
            # connection close under a memory alarm took 2 s more to give way.
            bound = self.settings.shutdown_grace_s + EXIT_MARGIN_S
            shutdown = asyncio.ensure_future(self.shutdown())
            await asyncio.wait([shutdown], timeout=bound)
            if not shutdown.done():
                log.error("shutdown did not finish within %g s: cut while %s", bound, self._step)
                _exit_now(ExitCode.UNAVAILABLE)
            shutdown.result()

    async def shutdown(self) -> None:
        """Undo what `start` did, last started first (see `start`): stop consuming, finish
        in-flight commands within the grace, requeue the rest, and hand the partitions over
        (their sessions keep running unless configured otherwise)."""
        if self._draining:
            return
        self._draining = True
        await self._stack.aclose()

    async def _stop_consuming(self, consumer: Consumer) -> None:
        self.partition_watch.stop()
        self._leaving = self.handover.taking_part()
        await self.handover.announce_draining(self._leaving)
        await consumer.stop_consuming()
        # Only now: while consuming, a command sent back would come straight back here.
        self.handover.stop_adopting()

    async def _stop_sessions(self, services: Services) -> None:
        for session in services.registry:
            with contextlib.suppress(Exception):
                await end_session(services, session, StopReason.SHUTDOWN, None)

    async def _stop_background(self, services: Services) -> None:
        for task in [*self._tasks, *services.background]:
            task.cancel()
        # Bounded: a task stuck in a call that ignores cancellation must not hang the exit.
        _, stuck = await asyncio.wait(self._tasks, timeout=TASK_EXIT_S)
        if stuck:
            log.warning("%d background tasks ignored cancellation", len(stuck))

    async def _seal(self) -> None:
        # Nothing of ours may emit for these sessions once the next owner takes over.
        await self.handover.seal(self._leaving)
        self.handover.release_all()


def _exit_now(code: ExitCode) -> NoReturn:
    """Leave without waiting for what is left: it may ignore cancellation (aio-pika's
    reconnection loop does until its connection is closed). The broker requeues what was
    unacknowledged, and the next owner adopts the partitions."""
    logging.shutdown()
    os._exit(code)


def _broker_user(amqp_url: str) -> str:
    """The user the worker authenticates as (aio-pika's default: guest)."""
    return unquote(urlsplit(amqp_url).username or "guest")


def _count_in_state(registry: Registry, provider: str, state: SessionState) -> int:
    return registry.count_by_state()[provider, state]
