"""The keep-alive scale benchmark end to end, small: RabbitMQ, simulator and worker processes."""

from __future__ import annotations

import time
from pathlib import Path

from bench.keepalive_report import SMOKE
from bench.keepalive_scale import run


async def test_keepalive_benchmark_holds_every_session(tmp_path: Path) -> None:
    started = time.monotonic()
    report = await run(SMOKE, log_dir=tmp_path)

    assert time.monotonic() - started < 40
    assert report.ready == SMOKE.sessions
    assert not report.create_failures
    # The simulator closes a session after 3 intervals without activity: none was lost.
    assert report.lost_idle == 0
    assert report.live_at_end == SMOKE.sessions
    # Kept alive, not merely young: a keep-alive per interval held, for every session.
    assert min(report.keepalives_per_session) >= SMOKE.intervals
    assert report.keepalives_by_outcome.get("ok", 0) >= SMOKE.sessions * SMOKE.intervals
    assert report.passed, report.table()
