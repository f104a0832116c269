"""SIGTERM ends the worker within its grace whatever the broker does: unreachable, the worker's
vhost deleted, publishes blocked by a memory alarm; a second signal ends it at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from yarl import URL

from simulator.server import RunningSimulator
from tests.integration.conftest import WorkerProcess, wait_until
from tests.reliability.conftest import WORKER_ENV, node_worker
from tests.reliability.proxy import Mode, TcpProxy
from tests.reliability.rabbit_node import RabbitNode

GRACE_S = float(WORKER_ENV["WORKER_SHUTDOWN_GRACE_S"])
# "Within the grace plus a few seconds": the bound the worker promises (app.EXIT_MARGIN_S).
BOUND_S = GRACE_S + 5


@pytest.fixture
async def proxy(rabbit_node: RabbitNode) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(rabbit_node.amqp_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def sigterm_exit(
    process: WorkerProcess, *, second_after: float | None = None
) -> tuple[float, int]:
    """Seconds from SIGTERM (and a second one `second_after` seconds later) to the exit, and
    the exit code."""
    began = time.monotonic()
    process.sigterm()
    if second_after is not None:
        await asyncio.sleep(second_after)
        process.process.send_signal(signal.SIGTERM)
    code = await process.wait(60)
    return time.monotonic() - began, code


@contextlib.asynccontextmanager
async def broker_fault(
    kind: str, rabbit_node: RabbitNode, node_url: str, proxy: TcpProxy
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """The URL the worker should use, and the fault to bring about once it runs."""
    mgmt = httpx.AsyncClient(base_url=rabbit_node.mgmt_url, auth=("guest", "guest"), timeout=10)

    async def unreachable() -> None:
        proxy.mode = Mode.REFUSE
        proxy.reset()

    async def delete_vhost() -> None:
        (await mgmt.delete(f"/api/vhosts/{URL(node_url).path.lstrip('/')}")).raise_for_status()

    async def memory_alarm() -> None:
        await asyncio.to_thread(rabbit_node.ctl, "set_vm_memory_high_watermark", "0.0000001")

        async def raised() -> bool:
            return all(node.get("mem_alarm") for node in (await mgmt.get("/api/nodes")).json())

        await wait_until(raised, 20)

    faults = {
        "the broker unreachable": (str(URL(node_url).with_port(proxy.port)), unreachable),
        "the vhost deleted": (node_url, delete_vhost),
        "a memory alarm": (node_url, memory_alarm),
    }
    try:
        yield faults[kind]
    finally:
        if kind == "a memory alarm":
            await asyncio.to_thread(rabbit_node.ctl, "set_vm_memory_high_watermark", "0.4")
        await mgmt.aclose()


@pytest.mark.parametrize("kind", ["the broker unreachable", "the vhost deleted", "a memory alarm"])
async def test_sigterm_ends_the_worker_within_its_grace(
    kind: str,
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    tmp_path: Path,
    proxy: TcpProxy,
) -> None:
    async with (
        broker_fault(kind, rabbit_node, node_url, proxy) as (url, fault),
        node_worker(rabbit_node, url, simulator, tmp_path / "worker.log") as process,
    ):
        await fault()
        await asyncio.sleep(1)  # the worker notices and starts reconnecting
        took, code = await sigterm_exit(process)
        log = process.log()
    print(f"\nexit {took:.1f} s after SIGTERM with {kind} (code {code})")
    assert took < BOUND_S, log
    # What the shutdown could not finish is named, and the exit is non-zero.
    assert code != 0, log
    assert "shutdown did not finish" in log, log


async def test_a_second_signal_exits_at_once(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    tmp_path: Path,
    proxy: TcpProxy,
) -> None:
    url = str(URL(node_url).with_port(proxy.port))
    env = {"WORKER_SHUTDOWN_GRACE_S": "30"}
    async with node_worker(rabbit_node, url, simulator, tmp_path / "w.log", **env) as process:
        proxy.mode = Mode.REFUSE
        proxy.reset()
        await asyncio.sleep(1)
        took, code = await sigterm_exit(process, second_after=1.0)
        log = process.log()
    print(f"\nexit {took:.1f} s after the first of two signals (1 s apart, code {code})")
    assert took < 3, log
    assert code == 130, log
    assert "second signal" in log, log
