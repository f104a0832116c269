"""The worker talks AMQP over TLS (amqps:// + AMQP_CA_FILE) to the private node's TLS
listener, and refuses a broker whose certificate another CA signed, with a clear error."""

from __future__ import annotations

from pathlib import Path

from contracts.commands import SessionCreate
from simulator.server import RunningSimulator
from tests.integration.conftest import worker_process
from tests.reliability.checker import Checker
from tests.reliability.conftest import WORKER_ENV, finish, node_worker
from tests.reliability.rabbit_node import RabbitNode, make_ca
from tests.reliability.traffic import ResilientProducer
from worker.cli.errors import ExitCode


def tls_url(rabbit_node: RabbitNode, node_url: str) -> str:
    vhost = node_url.rsplit("/", 1)[1]
    return f"amqps://guest:guest@localhost:{rabbit_node.tls_port}/{vhost}"


async def test_worker_over_tls_with_the_right_ca(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    env = {"AMQP_URL": tls_url(rabbit_node, node_url), "AMQP_CA_FILE": str(rabbit_node.ca_file)}
    async with node_worker(rabbit_node, node_url, simulator, tmp_path / "w.log", **env):
        await producer.start()
        await producer.send(SessionCreate(session_id="tls-0", avatar_id="a"))
        report = await finish(checker, simulator, timeout=20)
    assert not report.lost
    assert report.outcomes["session.create->session.ready"] == 1


async def test_worker_refuses_a_broker_signed_by_another_ca(
    rabbit_node: RabbitNode, node_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    other_ca, _, _ = make_ca(tmp_path / "other", "other")
    env = {
        **WORKER_ENV,
        "RABBITMQ_MANAGEMENT_URL": rabbit_node.mgmt_url,
        "AMQP_URL": tls_url(rabbit_node, node_url),
        "AMQP_CA_FILE": str(other_ca),
    }
    async with worker_process(node_url, simulator, tmp_path / "w.log", **env) as process:
        code = await process.wait(30)
        log = process.log()
    assert code == ExitCode.UNAVAILABLE, log
    assert "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
