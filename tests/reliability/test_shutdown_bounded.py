"""SIGTERM ends the worker within its grace whatever the broker does: unreachable, the worker's
vhost deleted, publishes blocked by a memory alarm; a second signal ends it at once."""

from __future__ import annotations

import asyncio
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


async def broker_gone(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    tmp_path: Path,
    via: TcpProxy | None,
    fault: Callable[[], Awaitable[None]],
) -> tuple[float, int, str]:
    url = str(URL(node_url).with_port(via.port)) if via else node_url
    async with node_worker(rabbit_node, url, simulator, tmp_path / "worker.log") as process:
        await fault()
        await asyncio.sleep(1)  # the worker notices and starts reconnecting
        took, code = await sigterm_exit(process)
        return took, code, process.log()


async def test_sigterm_with_the_broker_unreachable(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    tmp_path: Path,
    proxy: TcpProxy,
) -> None:
    async def unreachable() -> None:
        proxy.mode = Mode.REFUSE
        proxy.reset()

    took, code, log = await broker_gone(
        rabbit_node, node_url, simulator, tmp_path, proxy, unreachable
    )
    print(f"\nexit {took:.1f} s after SIGTERM with the broker unreachable (code {code})")
    assert took < BOUND_S, log
    assert code != 0, log
    assert "shutdown did not finish" in log, log


async def test_sigterm_with_the_vhost_deleted(
    rabbit_node: RabbitNode, node_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async def delete_vhost() -> None:
        vhost = URL(node_url).path.lstrip("/")
        async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as mgmt:
            answer = await mgmt.delete(f"{rabbit_node.mgmt_url}/api/vhosts/{vhost}")
            answer.raise_for_status()

    took, code, log = await broker_gone(
        rabbit_node, node_url, simulator, tmp_path, None, delete_vhost
    )
    print(f"\nexit {took:.1f} s after SIGTERM with the vhost deleted (code {code})")
    assert took < BOUND_S, log
    assert code != 0, log
    assert "shutdown did not finish" in log, log


async def test_sigterm_under_a_memory_alarm(
    rabbit_node: RabbitNode, node_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async def alarm() -> None:
        await asyncio.to_thread(rabbit_node.ctl, "set_vm_memory_high_watermark", "0.0000001")
        async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as mgmt:

            async def raised() -> bool:
                nodes = (await mgmt.get(f"{rabbit_node.mgmt_url}/api/nodes")).json()
                return all(node.get("mem_alarm") for node in nodes)

            await wait_until(raised, 20)

    try:
        took, code, log = await broker_gone(rabbit_node, node_url, simulator, tmp_path, None, alarm)
    finally:
        await asyncio.to_thread(rabbit_node.ctl, "set_vm_memory_high_watermark", "0.4")
    print(f"\nexit {took:.1f} s after SIGTERM under a memory alarm (code {code})")
    assert took < BOUND_S, log
    # Publishes are blocked: what the shutdown could not do is named, and the exit is non-zero.
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
