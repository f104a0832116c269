"""The argparse tree of `heygen-worker`; each subcommand module adds its own parser."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from worker.bus.connection import redact
from worker.cli import dead_letters, demo, publish, serve, tail
from worker.cli.broker import default_amqp_url

DEFAULT_CONNECT_TIMEOUT_S = 10.0


def package_version() -> str:
    try:
        return version("heygen-streaming-worker")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heygen-worker",
        description="Run and operate the HeyGen streaming worker: the worker itself, the HeyGen "
        "simulator, and tools that publish commands and read events over RabbitMQ.",
        epilog="Exit status: 0 ok, 1 command rejected or failed, 2 usage or configuration "
        "error, 3 broker (or a port) unavailable, 4 no answer in time, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    # Options every networked tool shares, given after the subcommand's name.
    common = argparse.ArgumentParser(add_help=False)
    url = default_amqp_url()
    common.add_argument(
        "--amqp-url", default=url, help=f"RabbitMQ URL (env AMQP_URL; now {redact(url)})"
    )
    common.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT_S,
        metavar="S",
        help="give up connecting to RabbitMQ after S seconds (10)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(subparsers)
    publish.add_parser(subparsers, common)
    tail.add_parser(subparsers, common)
    dead_letters.add_parser(subparsers, common)
    demo.add_parser(subparsers, common)
    return parser
