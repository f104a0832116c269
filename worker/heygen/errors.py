"""Typed HeyGen errors and the mapping from an HTTP answer (status, code, message) to them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar

AUTH_CODES = frozenset({400112})
FORBIDDEN_CODES = frozenset({400562, 400599})
WRONG_STATE_CODES = frozenset({400006})
# HeyGen's own code is unconfirmed; 10013 is what the project's simulator answers.
CAPACITY_CODES = frozenset({10013})

_CAPACITY_MESSAGE = re.compile(r"concurren.*limit|limit.*concurren", re.IGNORECASE)
_WRONG_STATE_MESSAGE = re.compile(r"not in correct state|session state wrong", re.IGNORECASE)


class HeyGenError(Exception):
    """A failed HeyGen call. `retryable`: the condition is transient (a later call may succeed);
    whether the client itself repeats the call depends on the endpoint (see retry.py)."""

    retryable: ClassVar[bool] = False
    kind: ClassVar[str] = "unknown"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        details = [f"{name}={value}" for name, value in self._details() if value is not None]
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.endpoint}: {self.message}{suffix}"

    def __repr__(self) -> str:
        fields = [f"endpoint={self.endpoint!r}", f"message={self.message!r}"]
        fields += [f"{name}={value!r}" for name, value in self._details()]
        return f"{type(self).__name__}({', '.join(fields)})"

    def _details(self) -> list[tuple[str, object]]:
        return [("code", self.code), ("http_status", self.http_status)]


class AuthenticationError(HeyGenError):
    kind = "auth"


class ForbiddenError(HeyGenError):
    kind = "forbidden"


class SessionClosedError(HeyGenError):
    """400006 or "session state wrong". `closed` is False for "not in correct state", which HeyGen
    also answers to a task sent before the viewer joined: a fresh session is not a closed one."""

    kind = "session_closed"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, code=code, http_status=http_status)
        self.closed = "closed" in message.lower()

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("closed", self.closed)]


class InvalidRequestError(HeyGenError):
    kind = "invalid_request"


class CapacityError(HeyGenError):
    retryable = True
    kind = "capacity"


class RateLimitedError(HeyGenError):
    retryable = True
    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, code=code, http_status=http_status)
        self.retry_after = retry_after

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("retry_after", self.retry_after)]


class ServerError(HeyGenError):
    retryable = True
    kind = "server"


class HeyGenTimeoutError(HeyGenError):
    """No answer in time: HeyGen may or may not have acted on the request."""

    retryable = True
    kind = "timeout"


class TransportError(HeyGenError):
    """A connection-level failure. `request_sent` is False only when the request provably never
    reached HeyGen (the connection could not be opened), which makes even billed calls safe to
    repeat."""

    retryable = True
    kind = "transport"

    def __init__(self, message: str, *, endpoint: str, request_sent: bool) -> None:
        super().__init__(message, endpoint=endpoint)
        self.request_sent = request_sent

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("request_sent", self.request_sent)]


def may_have_acted(error: BaseException) -> bool:
    """The call failed, but HeyGen may have carried the request out (and billed it)."""
    if isinstance(error, TransportError):
        return error.request_sent
    return isinstance(error, HeyGenTimeoutError | ServerError)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if value is None or not value.strip():
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def error_from_answer(
    *,
    endpoint: str,
    http_status: int,
    code: int | None,
    message: str,
    retry_after: str | None = None,
) -> HeyGenError:
    """The typed error for an answer that is not a success. Order matters: the capacity code and
    message are checked first because the limit arrives as a plain 400 (or 429/403)."""

    def make(cls: type[HeyGenError]) -> HeyGenError:
        return cls(message, endpoint=endpoint, code=code, http_status=http_status)

    if code in CAPACITY_CODES or _CAPACITY_MESSAGE.search(message):
        return make(CapacityError)
    if http_status == 401 or code in AUTH_CODES:
        return make(AuthenticationError)
    if http_status == 403 or code in FORBIDDEN_CODES:
        return make(ForbiddenError)
    if http_status == 429:
        return RateLimitedError(
            message,
            endpoint=endpoint,
            code=code,
            http_status=http_status,
            retry_after=parse_retry_after(retry_after),
        )
    if code in WRONG_STATE_CODES or _WRONG_STATE_MESSAGE.search(message):
        return make(SessionClosedError)
    if http_status >= 500:
        return make(ServerError)
    # Other 4xx, and an error code inside a 2xx answer: HeyGen refused this request as sent.
    return make(InvalidRequestError)
