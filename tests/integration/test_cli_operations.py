"""`heygen-worker dead-letters`, `demo` and `run` against real RabbitMQ and the simulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.codec import encode_command
from contracts.commands import CommandBase, SessionCreate, SessionStop
from contracts.topology import DEAD_LETTER_QUEUE
from simulator.server import RunningSimulator
from tests.integration.conftest import AVATAR, REPO, Producer, queue_depth
from tests.integration.test_cli import cli
from worker.app import Worker
from worker.cli import CliError, ExitCode, main


@pytest.fixture
def simulator_overrides() -> dict[str, Any]:
    return {"words_per_minute": 3000}


async def dead_letter(
    connection: AbstractRobustConnection, body: bytes, message_id: str, headers: dict[str, Any]
) -> None:
    """Put a message straight into the dead-letter queue, as the worker or broker would."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, routing_key=DEAD_LETTER_QUEUE)
    finally:
        await channel.close()


def body_of(command: CommandBase) -> bytes:
    return encode_command(command).body


async def test_dead_letters_list_keeps_them_and_requeue_republishes(
    amqp_url: str, worker: Worker, producer: Producer, connection: AbstractRobustConnection
) -> None:
    create = SessionCreate(session_id="dl1", avatar_id=AVATAR, command_id="fixed-create")
    stop = SessionStop(session_id="dl1", command_id="late-stop")
    # Set aside by the worker: its own headers.
    await dead_letter(
        connection,
        body_of(create),
        "fixed-create",
        {
            "x-dead-letter-reason": "handler_error",
            "x-dead-letter-detail": "RuntimeError('boom')",
            "x-original-queue": "avatar.commands.p0",
            "x-original-routing-key": "dl1",
            "x-dead-lettered-by": "old-worker",
        },
    )
    # Past the delivery limit: only the broker's x-death record says where it came from.
    await dead_letter(
        connection,
        body_of(stop),
        "late-stop",
        {
            "x-first-death-reason": "delivery_limit",
            "x-death": [
                {
                    "reason": "delivery_limit",
                    "queue": "avatar.commands.p1",
                    "exchange": "avatar.commands",
                    "routing-keys": ["dl1"],
                    "count": 1,
                }
            ],
        },
    )
    # Undecodable and without a routing key: cannot be requeued anywhere.
    await dead_letter(
        connection,
        b"\xff not json",
        "garbage",
        {"x-dead-letter-reason": "undecodable", "x-original-routing-key": ""},
    )

    code, lines = await cli(amqp_url, "dead-letters", "list")
    assert code == ExitCode.OK
    listed = [json.loads(line) for line in lines]
    assert [(d["message_id"], d["reason"], d["routing_key"]) for d in listed] == [
        ("fixed-create", "handler_error", "dl1"),
        ("late-stop", "delivery_limit", "dl1"),
        ("garbage", "undecodable", None),
    ]
    assert [d["type"] for d in listed] == ["session.create", "session.stop", None]
    assert listed[0]["detail"] == "RuntimeError('boom')"
    assert listed[0]["command"]["avatar_id"] == AVATAR
    assert listed[1]["original_queue"] == "avatar.commands.p1"
    assert listed[2]["body"].endswith("not json")
    assert await queue_depth(connection, DEAD_LETTER_QUEUE) == 3  # listing leaves them queued
    code, lines = await cli(amqp_url, "dead-letters", "list", "--limit", "1")
    assert (code, len(lines)) == (ExitCode.OK, 1)

    code, lines = await cli(amqp_url, "dead-letters", "requeue", "--message-id", "fixed-create")
    assert code == ExitCode.OK
    assert [json.loads(line)["requeued"] for line in lines] == ["fixed-create"]
    ready = await producer.tap.wait_for(lambda e: e.causation_id == "fixed-create", timeout=10)
    assert ready.type in ("session.created", "session.ready")
    assert await queue_depth(connection, DEAD_LETTER_QUEUE) == 2

    # The garbage stays (exit 1 says something was kept); the stop goes to its session.
    code, lines = await cli(amqp_url, "dead-letters", "requeue", "--all")
    assert code == ExitCode.FAILED
    assert [json.loads(line)["requeued"] for line in lines] == ["late-stop"]
    stopped = await producer.tap.wait_for(lambda e: e.causation_id == "late-stop", timeout=10)
    assert (stopped.type, stopped.session_id) == ("session.stopped", "dl1")
    assert await queue_depth(connection, DEAD_LETTER_QUEUE) == 1

    with pytest.raises(CliError, match="add --yes"):
        await cli(amqp_url, "dead-letters", "purge")
    code, lines = await cli(amqp_url, "dead-letters", "purge", "--yes")
    assert (code, lines) == (ExitCode.OK, ['{"purged": 1}'])
    assert await queue_depth(connection, DEAD_LETTER_QUEUE) == 0


def demo_event_types(lines: list[str]) -> list[str]:
    """Types of the event lines (`seq time type key=value ...`) of a demo transcript."""
    return [line.split()[2] for line in lines if not line.startswith((">", "summary:"))]


async def test_demo_runs_the_whole_conversation(amqp_url: str, worker: Worker) -> None:
    code, lines = await cli(amqp_url, "demo", "--session", "demo-t")
    assert code == ExitCode.OK, lines
    steps = [line for line in lines if line.startswith(">")]
    assert len(steps) == 6
    assert steps[0] == f"> create session demo-t (avatar {AVATAR})"
    types = demo_event_types(lines)
    answers = [t for t in types if t != "speech.finished"]  # estimated ones come when they do
    assert answers == [
        "session.created",
        "session.ready",
        "speech.started",
        "speech.started",
        "speech.started",
        "speech.interrupted",
        "session.stopped",
    ]
    assert types.count("speech.finished") >= 1  # at least the sync one, observed
    seqs = [int(line.split()[0]) for line in lines if not line.startswith((">", "summary:"))]
    assert seqs == list(range(1, len(seqs) + 1))
    assert lines[-1].startswith(f"summary: {len(types)} events in ")
    assert "3 speech tasks" in lines[-1]


async def test_demo_with_liveavatar_plays_a_two_way_conversation(
    amqp_url: str, worker: Worker, simulator: RunningSimulator
) -> None:
    await simulator.admin.configure_liveavatar(words_per_minute=3000)
    args = ("demo", "--provider", "liveavatar", "--simulator", simulator.base_url)
    code, lines = await cli(amqp_url, *args, "--session", "demo-la")
    print("\n".join(lines))  # the transcript, for `pytest -s`
    assert code == ExitCode.OK, lines
    steps = [line for line in lines if line.startswith(">")]
    assert steps[0] == "> create LiveAvatar session demo-la"
    assert "> the end user says 'Where is my parcel?' (simulator admin call)" in steps
    types = demo_event_types(lines)
    assert types[:2] == ["session.created", "session.ready"]
    # Observed speech: each speak's start, then its end, then the user's words and the reply.
    assert types.index("user.transcription") < len(types) - types[::-1].index("speech.started")
    assert "source=observed" in next(line for line in lines if "speech.finished" in line)
    heard = next(line for line in lines if " user.transcription " in line)
    assert "Where is my parcel?" in heard
    assert types.count("speech.finished") >= 2
    assert "speech.interrupted" in types
    assert types[-1] == "session.stopped"
    # The credits used, as LiveAvatar counted them.
    assert "credits (provider)" in lines[-1]
    assert "3 speech tasks" in lines[-1]


async def test_demo_with_liveavatar_lite_speaks_a_generated_tone(
    amqp_url: str, worker: Worker, simulator: RunningSimulator
) -> None:
    args = ("demo", "--provider", "liveavatar", "--mode", "lite", "--simulator", simulator.base_url)
    code, lines = await cli(amqp_url, *args, "--session", "demo-lite")
    print("\n".join(lines))  # the transcript, for `pytest -s`
    assert code == ExitCode.OK, lines
    steps = [line for line in lines if line.startswith(">")]
    assert steps[0] == "> create LiveAvatar LITE session demo-lite"
    assert sum(step.startswith("> speak_audio") for step in steps) == 4  # 2 s in 0.5 s parts
    types = demo_event_types(lines)
    assert types[:2] == ["session.created", "session.ready"]
    assert types.count("command.completed") == 4
    started, finished = types.index("speech.started"), types.index("speech.finished")
    assert started < finished
    assert "source=observed" in next(line for line in lines if "speech.finished" in line)
    assert types[-1] == "session.stopped"
    stats = await simulator.admin.liveavatar_stats()
    [lite] = [row.lite for row in stats.sessions.values() if row.lite is not None]
    assert lite.audio_bytes == 2 * 48_000
    assert (lite.utterances, lite.speak_ends, lite.protocol_errors) == (1, 1, 0)


async def test_demo_step_failure_exits_1_and_stops_the_session(
    amqp_url: str, worker: Worker, simulator: RunningSimulator
) -> None:
    await simulator.admin.set_fault("streaming.task", status=400, code=400999, message="nope")
    code, lines = await cli(amqp_url, "demo", "--session", "demo-f")
    assert code == ExitCode.FAILED
    assert "command.failed" in demo_event_types(lines)
    assert "> stop (clean-up after the failure)" in lines
    assert demo_event_types(lines)[-1] == "session.stopped"


def test_run_rejects_invalid_settings_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKER_PARTITIONS", "0")
    assert main(["run"]) == ExitCode.USAGE
    assert capsys.readouterr().err.startswith("heygen-worker: invalid configuration: WORKER_PART")


@pytest.mark.parametrize(
    ("amqp_url", "env", "code", "message"),
    [
        (
            "amqp://guest:secret@127.0.0.1:1/",
            {},
            None,  # the worker's own log line says why: cannot connect to RabbitMQ
            "cannot connect to RabbitMQ",
        ),
        (None, {"HEYGEN_API_KEY_FILE": "/nonexistent/key"}, ExitCode.USAGE, "cannot read the file"),
        (None, {"METRICS_PORT": "{busy}"}, ExitCode.UNAVAILABLE, "ddress already in use"),
    ],
    ids=["broker-down", "key-file-missing", "port-busy"],
)
def test_run_fails_to_start_without_a_traceback(
    amqp_url: str | None, env: dict[str, str], code: ExitCode | None, message: str
) -> None:
    variables = {
        k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "WORKER_", "HEYGEN_"))
    }
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        variables.update(METRICS_HOST="127.0.0.1", METRICS_PORT="0", SIMULATOR_PORT="0")
        variables.update({k: v.format(busy=port) for k, v in env.items()})
        argv = [str(Path(sys.executable).with_name("heygen-worker")), "run"]
        result = subprocess.run(
            [*argv, "--amqp-url", amqp_url] if amqp_url else argv,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=variables,
            check=False,
        )
    assert result.returncode != 0 if code is None else result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert "secret" not in result.stderr
