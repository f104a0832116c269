"""Error mapping from (status, code, message), error texts, and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from worker.providers.base import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
    TransportError,
)
from worker.providers.heygen.errors import error_from_answer
from worker.providers.retry import parse_retry_after


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (401, 400112, "Unauthorized", AuthenticationError),
        (401, None, "", AuthenticationError),
        (200, 400112, "Unauthorized", AuthenticationError),
        (403, None, "forbidden", ForbiddenError),
        (400, 400562, "forbidden", ForbiddenError),
        (400, 400599, "Your account does not have API access", ForbiddenError),
        (400, 400006, "Session is not in correct state", SessionClosedError),
        (400, None, "session state wrong: closed", SessionClosedError),
        (400, 40001, "missing session_id", InvalidRequestError),
        (400, 400175, "invalid parameter", InvalidRequestError),
        (400, 400014, "Avatar version is deprecated, please update to v3+", InvalidRequestError),
        (400, 10003, "Avatar version is deprecated, please update to v3+", InvalidRequestError),
        (404, None, "Not Found", InvalidRequestError),
        (400, 10013, "Concurrent session limit reached", CapacityError),
        (400, None, "Concurrent session limit reached", CapacityError),
        (429, None, "exceeded the limit of concurrent sessions", CapacityError),
        (429, None, "Too many requests", RateLimitedError),
        (500, None, "Internal Server Error", ServerError),
        (503, 500000, "busy", ServerError),
    ],
)
def test_error_from_answer(
    status: int, code: int | None, message: str, expected: type[ProviderError]
) -> None:
    error = error_from_answer(
        endpoint="streaming.task", http_status=status, code=code, message=message
    )
    assert type(error) is expected
    assert (error.http_status, error.code, error.message) == (status, code, message)


def test_kinds_and_retryable_flags() -> None:
    flags = {
        cls.kind: cls.retryable
        for cls in (
            AuthenticationError,
            ForbiddenError,
            SessionClosedError,
            InvalidRequestError,
            RateLimitedError,
            ServerError,
            ProviderTimeoutError,
            CapacityError,
            TransportError,
        )
    }
    assert flags == {
        "auth": False,
        "forbidden": False,
        "session_closed": False,
        "invalid_request": False,
        "rate_limited": True,
        "server": True,
        "timeout": True,
        "capacity": True,
        "transport": True,
    }


def test_session_closed_distinguishes_wrong_state_from_closed() -> None:
    wrong = SessionClosedError("Session is not in correct state", endpoint="e", code=400006)
    closed = SessionClosedError("session state wrong: closed", endpoint="e")
    assert (wrong.closed, closed.closed) == (False, True)


def test_text_and_repr_carry_endpoint_code_and_status() -> None:
    error = error_from_answer(
        endpoint="streaming.new", http_status=429, code=7, message="slow", retry_after="4"
    )
    assert str(error) == "streaming.new: slow (code=7, http_status=429, retry_after=4.0)"
    assert repr(error) == (
        "RateLimitedError(endpoint='streaming.new', message='slow', code=7, http_status=429,"
        " retry_after=4.0)"
    )
    sent = TransportError("ReadError: reset", endpoint="streaming.task", request_sent=True)
    assert str(sent) == "streaming.task: ReadError: reset (request_sent=True)"


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
