"""`python -m simulator` or `heygen-simulator`: serve the simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from simulator.server import serve
from simulator.settings import SimulatorSettings


async def _serve_until_signalled(settings: SimulatorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="heygen-simulator",
        description="HeyGen Streaming Avatar API simulator. Settings come from SIMULATOR_* "
        "environment variables; these options override host and port.",
    )
    parser.add_argument("--host", help="listen address (SIMULATOR_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (SIMULATOR_PORT, default 8090)")
    args = parser.parse_args(argv)
    overrides = {n: v for n in ("host", "port") if (v := getattr(args, n)) is not None}
    settings = SimulatorSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(_serve_until_signalled(settings))


if __name__ == "__main__":
    main()
