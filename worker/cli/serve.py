"""`heygen-worker run` and `heygen-worker simulator`: the long-running processes."""

from __future__ import annotations

import argparse
import asyncio
import logging

from pydantic import SecretStr, ValidationError

from worker.cli.errors import CliError, ExitCode
from worker.providers.credentials import ApiKeyError
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the worker until SIGTERM/SIGINT, then drain",
        description="Run the worker. Settings come from environment variables (AMQP_URL, "
        "HEYGEN_API_KEY, WORKER_PARTITIONS, ...; see docs/configuration.md); without "
        "HEYGEN_API_KEY the bundled simulator stands in for HeyGen. SIGTERM or Ctrl-C drains "
        "in-flight commands.",
    )
    run.add_argument("--amqp-url", help="RabbitMQ URL (default: env AMQP_URL, else local guest)")
    run.set_defaults(sync_handler=run_worker_command)
    simulator = subparsers.add_parser(
        "simulator",
        help="run the HeyGen simulator (same as heygen-simulator)",
        description="Serve the HeyGen Streaming API simulator until Ctrl-C; SIMULATOR_* "
        "environment variables configure it.",
    )
    simulator.add_argument("--port", type=int, help="listen port (SIMULATOR_PORT, default 8090)")
    simulator.add_argument("--host", help="listen address (SIMULATOR_HOST, default 127.0.0.1)")
    simulator.set_defaults(sync_handler=run_simulator_command)


def run_worker_command(args: argparse.Namespace) -> int:
    from worker.loop import use_uvloop

    use_uvloop()

    try:
        settings = (
            WorkerSettings()
            if args.amqp_url is None
            else WorkerSettings(amqp_url=SecretStr(args.amqp_url))
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CliError(f"invalid configuration: {problems}", ExitCode.USAGE) from None
    run_worker(settings)
    return ExitCode.OK


def run_worker(settings: WorkerSettings | None = None) -> None:
    """The worker process: logs and traces set up, the bundled simulator beside the worker for a
    provider without a key, and a failure to start told in one line with its exit code."""
    # The whole worker (and the simulator): imported only by `run`.
    import aio_pika
    import aiormq

    from worker.bus.connection import broker_reply
    from worker.bus.topology import TopologyError
    from worker.observability.logs import configure_logging
    from worker.observability.tracing import setup_tracing, shutdown_tracing

    settings = settings or WorkerSettings()
    configure_logging(settings.log_level, log_format=settings.log_format)
    setup_tracing()
    try:
        asyncio.run(_serve(settings))
    except TopologyError as exc:
        log.error("cannot declare the RabbitMQ topology: %s", exc)
        raise SystemExit(ExitCode.UNAVAILABLE) from None
    except (ConnectionError, aio_pika.exceptions.AMQPError, aiormq.exceptions.AMQPError) as exc:
        reply = broker_reply(exc)
        if reply is None:
            log.error("cannot connect to RabbitMQ (AMQP_URL): %s", exc)
        else:  # connected, then the broker refused something the worker asked for
            log.error("RabbitMQ refused the worker's request: %s", reply)
        raise SystemExit(ExitCode.UNAVAILABLE) from None
    except ApiKeyError as exc:
        log.error("%s", exc)
        raise SystemExit(ExitCode.USAGE) from None
    except OSError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(ExitCode.UNAVAILABLE) from None
    finally:
        shutdown_tracing()  # flush spans the batch exporter still holds


async def _serve(settings: WorkerSettings) -> None:
    from worker.app import Worker
    from worker.cli.bundled import beside_simulator

    async with beside_simulator(settings) as settings_to_run:
        await Worker(settings_to_run).run()


def run_simulator_command(args: argparse.Namespace) -> int:
    from simulator.__main__ import main as simulator_main

    argv = [
        f"--{name}={value}"
        for name in ("host", "port")
        if (value := getattr(args, name)) is not None
    ]
    simulator_main(argv)
    return ExitCode.OK
