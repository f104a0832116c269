"""What benchmarks run around the code they measure: a RabbitMQ vhost, child processes, /proc.

Children run in their own process group (killed whole at the end) and die with the benchmark
even if it is killed itself (PR_SET_PDEATHSIG), so a run never leaves processes behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

RABBIT_HOST = os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("BENCH_RABBIT_PORT", "5682"))
RABBIT_MGMT = os.environ.get("BENCH_RABBIT_MGMT", f"http://{RABBIT_HOST}:{RABBIT_PORT + 10000}")
RABBIT_USER = os.environ.get("BENCH_RABBIT_USER", "guest")
RABBIT_PASSWORD = os.environ.get("BENCH_RABBIT_PASSWORD", "guest")
PR_SET_PDEATHSIG = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def rabbit_vhost(prefix: str) -> AsyncIterator[str]:
    """An AMQP URL to a vhost made for this run alone, deleted (with its queues) at the end."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(
        base_url=RABBIT_MGMT, auth=(RABBIT_USER, RABBIT_PASSWORD), timeout=30
    ) as mgmt:
        (await mgmt.put(f"/api/vhosts/{vhost}")).raise_for_status()
        try:
            perms = {"configure": ".*", "write": ".*", "read": ".*"}
            url = f"/api/permissions/{vhost}/{RABBIT_USER}"
            (await mgmt.put(url, json=perms)).raise_for_status()
            yield f"amqp://{RABBIT_USER}:{RABBIT_PASSWORD}@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
        finally:
            await mgmt.delete(f"/api/vhosts/{vhost}")


async def rabbitmq_version() -> str:
    auth = (RABBIT_USER, RABBIT_PASSWORD)
    async with httpx.AsyncClient(base_url=RABBIT_MGMT, auth=auth, timeout=10) as mgmt:
        overview = (await mgmt.get("/api/overview")).json()
    return str(overview.get("rabbitmq_version", "unknown"))


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGKILL it when the benchmark process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ChildExited(RuntimeError):
    """A process the benchmark depends on ended early."""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise ChildExited(
                f"{self.name} exited with {self.process.returncode}; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            )

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after `grace_s`."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), grace_s)
        # Also reaps grandchildren left in the group after the leader exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        await self.process.wait()


@contextlib.asynccontextmanager
async def child_process(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path
) -> AsyncIterator[Child]:
    """Run `argv` in its own process group, output to `log_path`; stopped on exit, whatever."""
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    child = Child(name, process, log_path)
    try:
        yield child
    finally:
        await asyncio.shield(child.stop())


async def wait_until(
    what: str, ready: Callable[[], Awaitable[bool]], child: Child, timeout_s: float
) -> None:
    """Poll `ready` until true; fail early if `child` exits, or after `timeout_s`."""
    give_up = time.monotonic() + timeout_s
    while True:
        child.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if await ready():
                return
        if time.monotonic() > give_up:
            raise TimeoutError(f"{what} not ready after {timeout_s:g} s:\n{child.log_tail()}")
        await asyncio.sleep(0.1)


# --- /proc readings ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (utime and stime of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name, which may itself contain spaces and parentheses.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores added up (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already counted in user.
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS


def find_pid(command_name: str) -> int | None:
    """The first process whose /proc/<pid>/comm is `command_name` (read-only lookup)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == command_name:
                return int(entry.name)
    return None
