"""`heygen-worker publish` and `events` against real RabbitMQ, the simulator and a worker."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.topology import EVENTS_EXCHANGE
from tests.conftest import RABBIT_MGMT, RABBIT_PASSWORD, RABBIT_USER
from tests.integration.conftest import LIVEAVATAR_AVATAR, REPO, wait_until
from worker.app import Worker
from worker.bus.topology import TopologySpec, declare_topology
from worker.cli import CliError, ExitCode, build_parser, main
from worker.cli.broker import CONNECTION_NAME as CLI_CONNECTION

SPEC = TopologySpec(partitions=2, delivery_limit=5)  # the topology without a worker


@pytest.fixture
def simulator_overrides() -> dict[str, Any]:
    # 50 words a second: sync speech answers in a fraction of a second.
    return {"words_per_minute": 3000}


async def cli(amqp_url: str, *argv: str) -> tuple[int, list[str]]:
    """Run one subcommand in-process; its exit code and stdout lines."""
    args = build_parser().parse_args([*argv, "--amqp-url", amqp_url])
    out = io.StringIO()
    code = await args.handler(args, out)
    return code, out.getvalue().splitlines()


def types_of(lines: list[str]) -> list[str]:
    return [json.loads(line)["type"] for line in lines]


async def subscribed(amqp_url: str, tails: int = 1) -> bool:
    """At least `tails` queues are bound to avatar.events: the `events` tails are listening."""
    vhost = quote(amqp_url.rsplit("/", 1)[1], safe="")
    async with httpx.AsyncClient(auth=(RABBIT_USER, RABBIT_PASSWORD), timeout=5) as http:
        url = f"{RABBIT_MGMT}/api/exchanges/{vhost}/{EVENTS_EXCHANGE}/bindings/source"
        response = await http.get(url)
    queues = {b["destination"] for b in response.json()} if response.status_code == 200 else ()
    return len(queues) >= tails


async def test_publish_create_with_liveavatar_options(amqp_url: str, worker: Worker) -> None:
    args = ["--provider", "liveavatar", "--avatar", LIVEAVATAR_AVATAR, "--context-id", "ctx"]
    code, lines = await cli(amqp_url, "publish", "create", "--session", "la-c1", *args)
    assert code == ExitCode.OK, lines
    created = json.loads(lines[0])
    assert created["provider"] == "liveavatar"
    assert created["livekit_client_token"]  # the end user's browser needs it
    # Refused before anything is sent, naming the field and the provider.
    with pytest.raises(CliError, match=r"voice\.emotion is not supported with provider liveavatar"):
        await cli(
            amqp_url, "publish", "create", "--session", "la-c2", "--emotion", "Excited", *args
        )


async def test_publish_create_speak_stop_prints_the_answers_in_order(
    amqp_url: str, worker: Worker
) -> None:
    code, lines = await cli(amqp_url, "publish", "create", "--session", "c1")
    assert code == ExitCode.OK
    assert types_of(lines) == ["session.created", "session.ready"]
    created = json.loads(lines[0])
    assert created["access_token"]  # the user's own terminal: the viewer needs it
    command_id = created["causation_id"]
    assert all(json.loads(line)["causation_id"] == command_id for line in lines)

    code, lines = await cli(amqp_url, "publish", "speak", "--session", "c1", "--text", "Hi there")
    assert (code, types_of(lines)) == (ExitCode.OK, ["speech.started"])
    assert json.loads(lines[0])["task_mode"] == "async"

    code, lines = await cli(
        amqp_url, "publish", "speak", "--session", "c1", "--text", "Now in sync", "--mode", "sync"
    )
    assert (code, types_of(lines)) == (ExitCode.OK, ["speech.started", "speech.finished"])
    assert json.loads(lines[1])["source"] == "observed"

    code, lines = await cli(amqp_url, "publish", "keepalive", "--session", "c1")
    assert (code, types_of(lines)) == (ExitCode.OK, ["command.completed"])

    code, lines = await cli(amqp_url, "publish", "stop", "--session", "c1", "--reason", "bye")
    assert (code, types_of(lines)) == (ExitCode.OK, ["session.stopped"])
    stopped = json.loads(lines[0])
    assert (stopped["reason"], stopped["detail"], stopped["usage"]["tasks"]) == (
        "requested",
        "bye",
        2,
    )


async def test_publish_rejected_command_exits_1(amqp_url: str, worker: Worker) -> None:
    code, lines = await cli(amqp_url, "publish", "interrupt", "--session", "nobody")
    assert code == ExitCode.FAILED
    assert types_of(lines) == ["command.rejected"]
    assert json.loads(lines[0])["code"] == "unknown_session"


async def test_publish_list_prints_the_reply(amqp_url: str, worker: Worker) -> None:
    assert (await cli(amqp_url, "publish", "create", "--session", "l1"))[0] == ExitCode.OK
    code, lines = await cli(amqp_url, "publish", "list")
    assert (code, types_of(lines)) == (ExitCode.OK, ["sessions.listed"])
    sessions = json.loads(lines[0])["sessions"]
    assert [(s["session_id"], s["state"]) for s in sessions] == [("l1", "ready")]


async def test_publish_without_a_worker_times_out_with_exit_4(
    amqp_url: str, connection: AbstractRobustConnection
) -> None:
    await declare_topology(connection, SPEC)
    with pytest.raises(CliError, match=r"no answer to session\.stop .* within 0\.3 s") as raised:
        await cli(amqp_url, "publish", "stop", "--session", "s", "--wait", "0.3")
    assert raised.value.code == ExitCode.TIMEOUT


async def test_events_tail_is_filtered_by_session_and_type(amqp_url: str, worker: Worker) -> None:
    by_session = asyncio.create_task(cli(amqp_url, "events", "--session", "t1", "--count", "3"))
    await wait_until(lambda: subscribed(amqp_url), timeout=5)
    only_ready = asyncio.create_task(
        cli(amqp_url, "events", "--type", "session.r*", "--count", "2", "--timeout", "10")
    )
    await wait_until(lambda: subscribed(amqp_url, 2), timeout=5)
    for argv in (
        ("create", "--session", "t1"),
        ("create", "--session", "t2"),
        ("stop", "--session", "t2"),
        ("stop", "--session", "t1"),
    ):
        assert (await cli(amqp_url, "publish", *argv))[0] == ExitCode.OK

    code, lines = await asyncio.wait_for(by_session, 5)
    assert code == ExitCode.OK
    assert types_of(lines) == ["session.created", "session.ready", "session.stopped"]
    assert {json.loads(line)["session_id"] for line in lines} == {"t1"}
    code, lines = await asyncio.wait_for(only_ready, 5)
    assert code == ExitCode.OK
    assert [(e["type"], e["session_id"]) for e in map(json.loads, lines)] == [
        ("session.ready", "t1"),
        ("session.ready", "t2"),
    ]


async def test_events_tail_stops_when_the_broker_drops_it(
    amqp_url: str, connection: AbstractRobustConnection
) -> None:
    await declare_topology(connection, SPEC)
    tail = asyncio.create_task(cli(amqp_url, "events"))
    await wait_until(lambda: subscribed(amqp_url), timeout=5)
    vhost = quote(amqp_url.rsplit("/", 1)[1], safe="")
    async with httpx.AsyncClient(
        base_url=RABBIT_MGMT, auth=(RABBIT_USER, RABBIT_PASSWORD), timeout=5
    ) as http:

        async def cli_connections() -> list[str]:
            # By name: the management API lists connections late on a loaded broker, and the
            # test's own connection alone must not pass for the CLI's.
            found = (await http.get(f"/api/vhosts/{vhost}/connections")).json()
            return [
                c["name"]
                for c in found
                if (c.get("client_properties") or {}).get("connection_name") == CLI_CONNECTION
            ]

        await wait_until(cli_connections, timeout=20, interval=0.2)
        for name in await cli_connections():
            await http.delete(f"/api/connections/{quote(name, safe='')}")
    with pytest.raises(CliError, match="lost the connection to RabbitMQ: CONNECTION_FORCED"):
        await asyncio.wait_for(tail, 5)


async def test_events_tail_ends_at_its_timeout(
    amqp_url: str, connection: AbstractRobustConnection
) -> None:
    await declare_topology(connection, SPEC)
    code, lines = await cli(amqp_url, "events", "--timeout", "0.2")
    assert (code, lines) == (ExitCode.OK, [])


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["publish", "stop", "--session", "x", "--amqp-url", "amqp://guest:pw@127.0.0.1:1/"],
            ExitCode.UNAVAILABLE,
            "cannot connect to amqp://guest:***@127.0.0.1:1/",
        ),
        (["publish", "stop", "--session", "a.b"], ExitCode.USAGE, "invalid session.stop"),
        (["events", "--type", "nothing.*"], ExitCode.USAGE, "matches no event type"),
        (["events", "--session", "a b"], ExitCode.USAGE, "invalid session_id"),
    ],
)
def test_errors_are_one_line_with_a_meaningful_exit_code(
    argv: list[str], code: ExitCode, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("heygen-worker: ")
    assert message in line
    assert "pw" not in line


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["publish"])
    assert exited.value.code == ExitCode.USAGE
    assert "required: COMMAND" in capsys.readouterr().err


async def test_missing_topology_names_the_fix(amqp_url: str) -> None:
    args = build_parser().parse_args(["dead-letters", "list", "--amqp-url", amqp_url])
    with pytest.raises(CliError, match=r"no queue 'avatar.commands.dead'.*heygen-worker run"):
        await args.handler(args, io.StringIO())


def test_console_script_help_and_version() -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=30, cwd=REPO, check=False
        )

    script = str(Path(sys.executable).with_name("heygen-worker"))
    top = run(script, "--help")
    assert top.returncode == 0, top.stderr
    for command in ("run", "simulator", "publish", "events", "dead-letters", "demo"):
        assert command in top.stdout
    publish = run(script, "publish", "--help")
    assert publish.returncode == 0, publish.stderr
    for action in ("create", "speak", "interrupt", "stop", "keepalive", "list"):
        assert action in publish.stdout
    version = run(sys.executable, "-m", "worker", "--version")
    assert version.stdout.startswith("heygen-worker "), version.stderr
