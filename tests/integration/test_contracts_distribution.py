"""The contracts install alone: a fresh venv gets heygen-streaming-contracts[client] from this
tree (pydantic and aio-pika, not the worker) and publishes a command to RabbitMQ with it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

from contracts import COMMANDS_EXCHANGE, SessionSpeak, decode_command

REPO = Path(__file__).resolve().parents[2]
PUBLISH = """
import asyncio, sys
import aio_pika, contracts
from contracts import SessionSpeak
from contracts.client import publish_command

async def main() -> None:
    async with await aio_pika.connect(sys.argv[1]) as connection:
        command = SessionSpeak(session_id="s-1", text="Hello", command_id="c-1")
        await publish_command(await connection.channel(), command)
    print(contracts.__file__)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def contracts_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a new venv holding the contracts distribution with its client extra."""
    venv = tmp_path_factory.mktemp("producer") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{REPO / 'contracts'}[client]"],
        check=True,
        timeout=300,
    )
    return python


def test_only_the_contracts_and_their_dependencies_are_installed(contracts_python: Path) -> None:
    listed = subprocess.run(
        [str(contracts_python), "-m", "pip", "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"heygen-streaming-contracts", "pydantic", "aio-pika"} <= names
    assert names.isdisjoint({"heygen-streaming-worker", "prometheus-client", "httpx", "pyyaml"})


async def test_a_producer_publishes_a_command_with_the_contracts_alone(
    contracts_python: Path, amqp_url: str, tmp_path: Path
) -> None:
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            COMMANDS_EXCHANGE, "x-consistent-hash", durable=True
        )
        queue = await channel.declare_queue("avatar.commands.p0", durable=True)
        await queue.bind(exchange, routing_key="1")
        # Run outside the repository, so that only the venv's contracts can be imported.
        producer = await asyncio.create_subprocess_exec(
            str(contracts_python),
            "-c",
            PUBLISH,
            amqp_url,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(producer.communicate(), 60)
        assert producer.returncode == 0
        assert Path(out.decode().strip()).is_relative_to(contracts_python.parents[1])
        message = await queue.get(timeout=10)
    command = decode_command(message.body, content_type=message.content_type)
    assert isinstance(command, SessionSpeak)
    assert (command.session_id, command.text, command.command_id) == ("s-1", "Hello", "c-1")
    assert message.message_id == "c-1"
