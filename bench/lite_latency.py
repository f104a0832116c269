"""LiveAvatar LITE: the worker's added latency and CPU while relaying audio.

`python -m bench.lite_latency [--rate 20] [--seconds 30] [--sessions 20] [--part-s 1.0]` runs
RabbitMQ (own vhost), the simulator (LiveAvatar's REST API and LITE ws_url) and the worker as
separate processes on loopback. It opens LITE sessions, then publishes `session.speak_audio`
utterances (one final part each, random PCM) at `rate` a second spread over the sessions, and
measures:

- latency: from the publish (the producer's clock) to the utterance's first `agent.speak`
  arriving at the simulated avatar (the same machine's clock): the broker hop, the worker's
  decode, checkpoint and chunking, and the WebSocket;
- CPU: the worker process's CPU seconds during the speaking phase, per second of audio relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import stats
from bench.keepalive_report import REPO, Params
from bench.keepalive_rig import API_KEY, Rig, create_all, running_rig, session_ids
from bench.results import machine, now_utc, record_section, revision
from bench.sampler import Phase
from contracts.client import publish_command
from contracts.commands import SessionCreate, SessionSpeakAudio
from contracts.common import LiveAvatarMode, Provider
from simulator.liveavatar import LiveAvatarAdmin

AVATAR = "2f5b3c6e-9a41-4f4f-8a55-6f2d1c0b7e11"
BYTES_PER_SECOND = 48_000


def lite_create(session_id: str) -> SessionCreate:
    return SessionCreate(
        session_id=session_id,
        avatar_id=AVATAR,
        provider=Provider.LIVEAVATAR,
        mode=LiveAvatarMode.LITE,
    )


@dataclass(frozen=True)
class Load:
    rate: float = 20.0  # utterances a second
    seconds: float = 30.0
    sessions: int = 20
    part_s: float = 1.0  # audio per utterance

    def params(self, deadline_s: float = 300.0) -> Params:
        return Params(
            sessions=self.sessions,
            interval_s=60.0,
            intervals=1,
            create_concurrency=self.sessions,
            deadline_s=deadline_s,
            source=REPO,
            simulator_env={
                "SIMULATOR_LIVEAVATAR_API_KEYS": API_KEY,
                "SIMULATOR_LIVEAVATAR_CREDITS": "1000000000",
            },
            worker_env={"WORKER_DEFAULT_PROVIDER": "liveavatar"},
        )


@dataclass
class Result:
    load: Load
    revision: str
    started: str
    machine: dict[str, str]
    published: int = 0
    arrived: int = 0
    latency_s: list[float] = field(default_factory=list)
    audio_s: float = 0.0
    worker_cpu_s: float = math.nan
    phase_s: float = math.nan

    def rows(self) -> list[tuple[str, str]]:
        p50, p99 = stats.quantile(self.latency_s, 0.5), stats.quantile(self.latency_s, 0.99)
        return [
            ("utterances published / reached the avatar", f"{self.published} / {self.arrived}"),
            (
                "publish -> first agent.speak p50 / p99 / max",
                f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms / "
                f"{max(self.latency_s, default=math.nan) * 1000:.1f} ms",
            ),
            ("audio relayed", f"{self.audio_s:.0f} s in {self.phase_s:.1f} s"),
            ("worker CPU", f"{self.worker_cpu_s:.2f} s"),
            (
                "worker CPU per second of audio",
                f"{self.worker_cpu_s / self.audio_s * 1000:.2f} ms" if self.audio_s else "n/a",
            ),
        ]

    def table(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        return "\n".join(f"{name:<{width}}  {value}" for name, value in self.rows())

    def markdown(self) -> str:
        load = self.load
        lines = [
            f"## lite_latency at {self.revision} ({self.started})",
            "",
            f"LiveAvatar LITE: {load.rate:g} utterances a second for {load.seconds:g} s over "
            f"{load.sessions} sessions, each utterance one final `session.speak_audio` part of "
            f"{load.part_s:g} s (random PCM); one worker process, the simulator and RabbitMQ as "
            f"separate processes; machine: {self.machine}. Latency is from the publish to the "
            "utterance's first `agent.speak` at the simulated avatar (broker hop included).",
            "",
            "| figure | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in self.rows()),
        ]
        return "\n".join(lines)


async def speak_at_rate(
    rig: Rig, ids: list[str], rate: float, seconds: float, part_s: float
) -> dict[str, float]:
    """Publish utterances at `rate` a second, round robin over `ids`; publish times by id."""
    published: dict[str, float] = {}
    count = int(rate * seconds)
    began = time.monotonic()
    for n in range(count):
        await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        utterance = f"utt-{n:06d}"
        audio = base64.b64encode(os.urandom(int(part_s * BYTES_PER_SECOND) // 2 * 2)).decode()
        command = SessionSpeakAudio(
            session_id=ids[n % len(ids)], utterance_id=utterance, audio=audio, final=True
        )
        published[utterance] = time.time()
        await publish_command(rig.channel, command)
    return published


async def run(load: Load, params: Params, log_dir: Path | None = None) -> Result:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-lite-"))
    result = Result(load, revision(REPO), now_utc(), machine())
    async with asyncio.timeout(params.deadline_s), running_rig(params, log_dir) as rig:
        rig.enter(f"opening {load.sessions} LITE sessions")
        await create_all(rig, make=lite_create)
        ids = [s for s in session_ids(0, load.sessions) if s in rig.fleet.ready]
        rig.enter(f"{len(ids)} ready; speaking {load.rate:g} utterances a second")
        start = rig.sampler.mark()
        published = await speak_at_rate(rig, ids, load.rate, load.seconds, load.part_s)
        result.published = len(published)
        async with LiveAvatarAdmin(rig.simulator_url, timeout=60) as admin:
            arrived: dict[str, float] = {}
            for _ in range(60):
                sim = await admin.liveavatar_stats()
                arrived = {
                    key: at
                    for row in sim.sessions.values()
                    if row.lite is not None
                    for key, at in row.lite.first_chunk_at.items()
                }
                if len(arrived) >= len(published):
                    break
                await asyncio.sleep(0.5)
            audio_bytes = sum(r.lite.audio_bytes for r in sim.sessions.values() if r.lite)
        end = rig.sampler.mark()
        phase = Phase.between(start, end)
        result.worker_cpu_s, result.phase_s = phase.cpu_s["worker"], phase.seconds
        result.arrived = len(arrived)
        result.latency_s = [arrived[u] - published[u] for u in published if u in arrived]
        result.audio_s = audio_bytes / BYTES_PER_SECOND
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lite_latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="utterances a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--part-s", type=float, default=1.0, help="audio per utterance, s")
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    load = Load(args.rate, args.seconds, args.sessions, args.part_s)
    result = asyncio.run(run(load, load.params(args.deadline)))
    print(result.table())
    if not args.no_record:
        record_section("lite_latency", result.markdown())
        print("recorded in bench/RESULTS.md")
    return 0 if result.arrived == result.published else 1


if __name__ == "__main__":
    sys.exit(main())
