"""Once a second, the RSS of one process and the CPU time of several, plus the whole machine's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from bench.harness import cpu_seconds, machine_busy_seconds, memory_kib


@dataclass(frozen=True)
class Reading:
    at: float  # time.monotonic()
    wall: float  # time.time(), to place it among the simulator's request log
    rss_kib: int  # of the watched process
    cpu_s: Mapping[str, float]  # cumulative CPU seconds by process name (NaN once it is gone)
    machine_busy_s: float  # all cores together


class Sampler:
    """`watched` names the process whose memory is followed; `pids` every process timed."""

    def __init__(self, watched: str, pids: Mapping[str, int], period_s: float = 1.0) -> None:
        self._watched = watched
        self._pids = dict(pids)
        self._period_s = period_s
        self.readings: list[Reading] = []

    def read(self) -> Reading:
        cpu: dict[str, float] = {}
        for name, pid in self._pids.items():
            try:
                cpu[name] = cpu_seconds(pid)
            except OSError:
                cpu[name] = float("nan")
        rss = memory_kib(self._pids[self._watched]).get("VmRSS", 0)
        return Reading(time.monotonic(), time.time(), rss, cpu, machine_busy_seconds())

    def peak_kib(self) -> int:
        """The kernel's high-water mark of the watched process's RSS (VmHWM)."""
        return memory_kib(self._pids[self._watched]).get("VmHWM", 0)

    def mark(self) -> Reading:
        """A reading taken now (and kept), to delimit a phase."""
        reading = self.read()
        self.readings.append(reading)
        return reading

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.mark()
            await asyncio.sleep(self._period_s)


@dataclass(frozen=True)
class Phase:
    """CPU used between two readings: seconds by process and share of one core."""

    seconds: float
    cpu_s: Mapping[str, float]
    machine_busy_cores: float  # average cores busy machine-wide (everyone's work)

    @classmethod
    def between(cls, start: Reading, end: Reading) -> Phase:
        seconds = max(end.at - start.at, 1e-9)
        cpu = {name: end.cpu_s[name] - start.cpu_s[name] for name in start.cpu_s}
        return cls(seconds, cpu, (end.machine_busy_s - start.machine_busy_s) / seconds)

    def core_share(self, name: str) -> float:
        return self.cpu_s[name] / self.seconds


Probe = Callable[[], Awaitable[object]]


class Prober:
    """Times a cheap request to each process once a second: its event loop's responsiveness."""

    def __init__(self, probes: Mapping[str, Probe], period_s: float = 1.0) -> None:
        self._probes = dict(probes)
        self._period_s = period_s
        self.timings: dict[str, list[tuple[float, float]]] = {name: [] for name in probes}

    async def _probe(self, name: str, probe: Probe) -> None:
        started = time.monotonic()
        # A probe that fails (a timeout: the loop stalled) still counts, for as long as it took.
        with contextlib.suppress(Exception):
            await probe()
        self.timings[name].append((time.time(), time.monotonic() - started))

    async def run(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(n, p) for n, p in self._probes.items()))
            await asyncio.sleep(self._period_s)

    def between(self, name: str, start: Reading, end: Reading) -> list[float]:
        """Latencies of the probes of `name` answered between two readings."""
        return [s for at, s in self.timings[name] if start.wall <= at <= end.wall]
