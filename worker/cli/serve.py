"""`heygen-worker run` and `heygen-worker simulator`: the long-running processes."""

from __future__ import annotations

import argparse

from pydantic import SecretStr, ValidationError

from worker.cli.errors import CliError, ExitCode
from worker.providers.credentials import ApiKeyError
from worker.settings import WorkerSettings


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
    from worker.app import run_worker  # the whole worker: imported only by `run`
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
    try:
        run_worker(settings)
    except ApiKeyError as exc:  # the message names the variable, never the key
        raise CliError(f"invalid configuration: {exc}", ExitCode.USAGE) from None
    except OSError as exc:
        # run_worker reports broker and topology failures itself; this is the rest,
        # e.g. METRICS_PORT or SIMULATOR_PORT already in use.
        raise CliError(f"cannot start the worker: {exc}") from None
    return ExitCode.OK


def run_simulator_command(args: argparse.Namespace) -> int:
    from simulator.__main__ import main as simulator_main

    argv = [
        f"--{name}={value}"
        for name in ("host", "port")
        if (value := getattr(args, name)) is not None
    ]
    simulator_main(argv)
    return ExitCode.OK
