"""LiveAvatar's error answers mapped onto the provider errors of worker/providers/base.py.

LiveAvatar documents no error-code table: the HTTP status decides, with the message as a hint
for what a plain 400 means (an ended session, a credit or concurrency limit).
"""

from __future__ import annotations

import re
from typing import Any

from worker.providers.base import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    InvalidRequestError,
    ProviderError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
)
from worker.providers.retry import parse_retry_after

_CAPACITY = re.compile(r"credit|concurren|session limit", re.IGNORECASE)
_CLOSED = re.compile(r"not active|inactive|ended|closed|stopped|not found", re.IGNORECASE)


class InvalidFieldsError(InvalidRequestError):
    """A 422: LiveAvatar's validation refused these fields (dotted paths, e.g.
    "avatar_persona.voice_id"). The message names them too; input values are never kept."""

    def __init__(self, message: str, *, endpoint: str, fields: tuple[str, ...]) -> None:
        super().__init__(message, endpoint=endpoint, http_status=422)
        self.fields = fields

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("fields", ",".join(self.fields))]


class SessionStartError(ProviderError):
    """Starting a session whose token was created failed. `session_id` is that session: when
    `billed` (the start may have happened) the caller must stop it, or it runs and bills until
    LiveAvatar's idle timeout. `cause` is the typed error of the start call."""

    def __init__(self, session_id: str, cause: ProviderError, *, billed: bool) -> None:
        super().__init__(cause.message, endpoint=cause.endpoint, http_status=cause.http_status)
        self.session_id = session_id
        self.cause = cause
        self.billed = billed

    def _details(self) -> list[tuple[str, object]]:
        return [
            ("session_id", self.session_id),
            ("billed", self.billed),
            ("cause", self.cause.kind),
        ]


def _field_errors(detail: list[Any]) -> list[tuple[str, str]]:
    """(dotted field, message) of each FastAPI detail item, the "body"/"query" prefix dropped."""
    found = []
    for item in detail:
        if not isinstance(item, dict):
            continue
        loc = [str(part) for part in item.get("loc") or []]
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        found.append((".".join(loc) or "body", str(item.get("msg") or "invalid")))
    return found


def error_from_answer(
    *, endpoint: str, http_status: int, payload: Any, retry_after: str | None
) -> ProviderError:
    """The typed error for an answer whose HTTP status is not a success. `payload` is the
    decoded body (None when it is not JSON); its message must be redacted already."""
    body = payload if isinstance(payload, dict) else {}
    detail = body.get("detail")
    if http_status == 422 and isinstance(detail, list):
        problems = _field_errors(detail)
        message = "; ".join(f"{name}: {why}" for name, why in problems) or "invalid request"
        fields = tuple(dict.fromkeys(name for name, _ in problems))
        return InvalidFieldsError(message, endpoint=endpoint, fields=fields)
    message = str(body.get("message") or detail or f"HTTP {http_status}")
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, int) else None

    def make(cls: type[ProviderError]) -> ProviderError:
        return cls(message, endpoint=endpoint, code=code, http_status=http_status)

    if http_status == 401:
        return make(AuthenticationError)
    if http_status == 402 or _CAPACITY.search(message):
        return make(CapacityError)
    if http_status == 403:
        return make(ForbiddenError)
    if http_status == 429:
        return RateLimitedError(
            message,
            endpoint=endpoint,
            code=code,
            http_status=http_status,
            retry_after=parse_retry_after(retry_after),
        )
    if http_status == 404 or (http_status < 500 and _CLOSED.search(message)):
        return SessionClosedError(
            message, endpoint=endpoint, code=code, http_status=http_status, closed=True
        )
    if http_status >= 500:
        return make(ServerError)
    return make(InvalidRequestError)
