"""Typed async client for LiveAvatar's REST API (https://api.liveavatar.com).

Requests go through the injected httpx transport (the project's aiohttp one by default), are
bounded by the caller's deadline, and are repeated only where that cannot bill or act twice.
Success is the HTTP status: the documented envelope `code` values disagree (100, 1000, <= 200).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from worker.providers.base import (
    ProviderError,
    ServerError,
    may_have_acted,
)
from worker.providers.liveavatar.errors import SessionStartError, error_from_answer
from worker.providers.liveavatar.models import (
    Credits,
    EndReason,
    SessionConfig,
    SessionPage,
    SessionRow,
    SessionToken,
    StartedSession,
)
from worker.providers.retry import RetryPolicy, Safety, is_retried
from worker.providers.transport import (
    ENDPOINT_EXTENSION,
    Sender,
    default_transport,
)

DEFAULT_BASE_URL = "https://api.liveavatar.com"
PAGE_SIZE = 100  # the largest page LiveAvatar serves
MAX_PAGES = 1000  # a `next` that never ends is LiveAvatar's bug, not a reason to loop forever

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# Bounded endpoint names (errors, retries, metrics labels), as the simulator names them.
ENDPOINT_SAFETY: Mapping[str, Safety] = {
    "sessions.token": Safety.UNSAFE,  # creates a session: never repeated blindly
    "sessions.start": Safety.UNSAFE,  # holds a billed minute
    "sessions.keep-alive": Safety.IDEMPOTENT,
    "sessions.stop": Safety.IDEMPOTENT,
    "sessions.list": Safety.IDEMPOTENT,
    "sessions.get": Safety.IDEMPOTENT,
    "users.credits": Safety.IDEMPOTENT,
}


def is_retried_here(endpoint: str, error: ProviderError) -> bool:
    """The shared retry table's rule (a rate limit or a provably unsent request is always
    retried) plus: an idempotent LiveAvatar call is retried when LiveAvatar may have acted."""
    if is_retried(endpoint, error):
        return True
    return ENDPOINT_SAFETY.get(endpoint) is Safety.IDEMPOTENT and may_have_acted(error)


class LiveAvatarClient:
    """Holds one connection pool; use as `async with LiveAvatarClient(key) as liveavatar:`.

    Every method takes `deadline` (a time.monotonic() value): no attempt starts, and no retry
    waits, past it, and each attempt's timeout is capped by the time left.
    """

    def __init__(
        self,
        api_key: SecretStr,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_concurrency: int = 64,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sender = Sender(transport or default_transport(max_concurrency), max_concurrency)
        self._base = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"LiveAvatarClient(base_url={self.base_url!r}, timeout={self._timeout})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._sender.aclose()

    # --- endpoints ---------------------------------------------------------------------------

    async def create_token(
        self, config: SessionConfig, *, deadline: float | None = None
    ) -> SessionToken:
        """A new session (not started, not billed yet) and the token that starts it."""
        data = await self._call(
            "POST", "/v1/sessions/token", "sessions.token", body=config.to_wire(), deadline=deadline
        )
        return self._parse("sessions.token", SessionToken, data)

    async def start(self, token: SessionToken, *, deadline: float | None = None) -> StartedSession:
        """Start the session: it goes live and holds a billed minute. Answers 201."""
        data = await self._call(
            "POST",
            "/v1/sessions/start",
            "sessions.start",
            body={"session_id": token.session_id},
            bearer=token.session_token,
            deadline=deadline,
        )
        return self._parse("sessions.start", StartedSession, data)

    async def open_session(
        self, config: SessionConfig, *, deadline: float | None = None
    ) -> StartedSession:
        """create_token then start. A failed start raises SessionStartError with the session
        id, so that the caller can stop a session that may be live and billing."""
        token = await self.create_token(config, deadline=deadline)
        try:
            return await self.start(token, deadline=deadline)
        except ProviderError as error:
            billed = may_have_acted(error)
            raise SessionStartError(token.session_id, error, billed=billed) from error

    async def keep_alive(self, session_id: str, *, deadline: float | None = None) -> None:
        await self._call(
            "POST",
            "/v1/sessions/keep-alive",
            "sessions.keep-alive",
            body={"session_id": session_id},
            deadline=deadline,
        )

    async def stop(
        self, session_id: str, reason: EndReason | None = None, *, deadline: float | None = None
    ) -> None:
        body: dict[str, Any] = {"session_id": session_id}
        if reason is not None:
            body["reason"] = reason
        await self._call("POST", "/v1/sessions/stop", "sessions.stop", body=body, deadline=deadline)

    async def list_active(self, *, deadline: float | None = None) -> list[SessionRow]:
        """Every active session of the account, all pages. Pages are asked for by number, not by
        following `next` (an absolute URL that must not receive the key if it pointed away)."""
        rows: list[SessionRow] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"type": "active", "page": str(page), "page_size": str(PAGE_SIZE)}
            data = await self._call(
                "GET", "/v1/sessions", "sessions.list", params=params, deadline=deadline
            )
            answer = self._parse("sessions.list", SessionPage, data)
            rows += answer.results
            if answer.next is None or not answer.results:
                break
        return rows

    async def get_session(self, session_id: str, *, deadline: float | None = None) -> SessionRow:
        """One session, live or ended (credits_consumed, end_reason)."""
        data = await self._call(
            "GET", f"/v1/sessions/{session_id}", "sessions.get", deadline=deadline
        )
        return self._parse("sessions.get", SessionRow, data)

    async def credits_left(self, *, deadline: float | None = None) -> float:
        data = await self._call("GET", "/v1/users/credits", "users.credits", deadline=deadline)
        return self._parse("users.credits", Credits, data).credits_left

    # --- plumbing ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        bearer: SecretStr | None = None,
        deadline: float | None,
    ) -> Any:
        """The envelope's `data` of a successful answer. `bearer`: authenticate with this
        session token instead of the key."""
        credential = bearer or self._api_key
        header = "Authorization" if bearer else "X-API-KEY"
        value = (
            f"Bearer {credential.get_secret_value()}" if bearer else credential.get_secret_value()
        )
        request = httpx.Request(
            method,
            self._base + path,
            params=params,
            json=body,
            headers={header: value, "Accept": "application/json"},
            extensions={ENDPOINT_EXTENSION: endpoint},
        )

        async def attempt() -> Any:
            return await self._attempt(endpoint, request, credential, deadline)

        return await self._retry.run(endpoint, attempt, deadline=deadline, retried=is_retried_here)

    async def _attempt(
        self, endpoint: str, request: httpx.Request, credential: SecretStr, deadline: float | None
    ) -> Any:
        budget = Sender.budget(endpoint, self._timeout, deadline)
        request.extensions["timeout"] = Sender.timeouts(budget)
        response = await self._sender.send(
            endpoint, request, budget, lambda text: self._redact(text, credential)
        )
        return self._unwrap(endpoint, response, credential)

    def _unwrap(self, endpoint: str, response: httpx.Response, credential: SecretStr) -> Any:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success:
            if not isinstance(payload, dict):
                raise ServerError(
                    "answer is not a JSON object",
                    endpoint=endpoint,
                    http_status=response.status_code,
                )
            return payload.get("data")
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            payload = {**payload, "message": self._redact(payload["message"], credential)}
        raise error_from_answer(
            endpoint=endpoint,
            http_status=response.status_code,
            payload=payload,
            retry_after=response.headers.get("Retry-After"),
        )

    def _parse(self, endpoint: str, model: type[M], data: Any) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # Without the input values: they hold tokens.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ServerError(f"unexpected answer: {problems}", endpoint=endpoint) from None

    def _redact(self, text: str, credential: SecretStr) -> str:
        for secret in {self._api_key.get_secret_value(), credential.get_secret_value()}:
            if secret:
                text = text.replace(secret, "**********")
        return text
