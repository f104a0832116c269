"""AMQP_URL parsing and the aio-pika seam the failover relies on."""

from __future__ import annotations

import pytest
from aio_pika import RobustConnection

from worker.bus.connection import redact, split_urls
from worker.settings import WorkerSettings


def test_several_urls_are_split_in_order() -> None:
    assert split_urls(" amqp://a:5672/, amqps://b/v ,") == ["amqp://a:5672/", "amqps://b/v"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "names no broker"), ("amqp://a/,http://b/", "must be amqp:// or amqps://")],
)
def test_a_bad_amqp_url_is_refused_with_its_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        WorkerSettings(amqp_url=value)


def test_aio_pika_still_has_the_reconnection_step_the_failover_overrides() -> None:
    # FailoverConnection overrides this private step of aio-pika's reconnection loop: if a
    # new aio-pika renames it, failover would silently stop; this fails instead.
    assert callable(getattr(RobustConnection, "_RobustConnection__connect_transport", None))


def test_every_password_of_several_urls_is_redacted() -> None:
    urls = "amqp://u:secret1@a:5672/v,amqps://u:secret2@b/v"
    assert redact(urls) == "amqp://u:***@a:5672/v,amqps://u:***@b/v"
