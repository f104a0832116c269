"""Typed async client for HeyGen's Streaming Avatar API: one method per endpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import SecretStr, TypeAdapter, ValidationError

from worker.providers.base import ServerError
from worker.providers.heygen.errors import error_from_answer
from worker.providers.heygen.models import (
    Avatar,
    IceCandidate,
    NewSession,
    NewSessionRequest,
    RemoteSession,
    SdpAnswer,
    TaskMode,
    TaskResult,
    TaskType,
)
from worker.providers.retry import RetryPolicy
from worker.providers.transport import (
    ENDPOINT_EXTENSION,
    Sender,
    default_transport,
)

DEFAULT_BASE_URL = "https://api.heygen.com"

M = TypeVar("M")
_SESSIONS = TypeAdapter(list[RemoteSession])
_AVATARS = TypeAdapter(list[Avatar])


def endpoint_name(path: str) -> str:
    """Bounded name of a path, for errors, the retry table and metrics labels (the observability
    transport names paths the same way): "/v1/streaming/avatar.list" -> "streaming.avatar.list"."""
    return path.removeprefix("/v1/").replace("/", ".")


class HeyGenClient:
    """Holds one connection pool; use as `async with HeyGenClient(key) as heygen:`.

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
        self._max_concurrency = max_concurrency
        self._retry = retry or RetryPolicy()
        # Requests go straight to the transport: AsyncClient.send's URL merging, cookies, auth
        # and redirect machinery cost twice the transport itself per request.
        self._sender = Sender(transport or default_transport(max_concurrency), max_concurrency)
        self._base = base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}

    def __repr__(self) -> str:
        return (
            f"HeyGenClient(base_url={self.base_url!r}, timeout={self._timeout}, "
            f"max_concurrency={self._max_concurrency})"
        )

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

    async def new_session(
        self, request: NewSessionRequest, *, deadline: float | None = None
    ) -> NewSession:
        data = await self._call("POST", "/v1/streaming.new", request.to_wire(), deadline=deadline)
        return self._parse("streaming.new", NewSession.model_validate, data)

    async def start_session(
        self, session_id: str, sdp: SdpAnswer | None = None, *, deadline: float | None = None
    ) -> None:
        body: dict[str, Any] = {"session_id": session_id}
        if sdp is not None:
            body["sdp"] = sdp.to_wire()
        await self._call("POST", "/v1/streaming.start", body, deadline=deadline)

    async def ice(
        self, session_id: str, candidate: IceCandidate, *, deadline: float | None = None
    ) -> None:
        body = {"session_id": session_id, "candidate": candidate.to_wire()}
        await self._call("POST", "/v1/streaming.ice", body, deadline=deadline)

    async def task(
        self,
        session_id: str,
        text: str,
        task_type: TaskType = "repeat",
        task_mode: TaskMode = "async",
        *,
        deadline: float | None = None,
        request_timeout: float | None = None,
    ) -> TaskResult:
        """`request_timeout` overrides the client's timeout for this call: a sync task may answer
        only when the speech ends."""
        body = {
            "session_id": session_id,
            "text": text,
            "task_type": task_type,
            "task_mode": task_mode,
        }
        data = await self._call(
            "POST", "/v1/streaming.task", body, deadline=deadline, request_timeout=request_timeout
        )
        return self._parse("streaming.task", TaskResult.model_validate, data or {})

    async def interrupt(self, session_id: str, *, deadline: float | None = None) -> None:
        await self._call(
            "POST", "/v1/streaming.interrupt", {"session_id": session_id}, deadline=deadline
        )

    async def stop(self, session_id: str, *, deadline: float | None = None) -> None:
        await self._call(
            "POST", "/v1/streaming.stop", {"session_id": session_id}, deadline=deadline
        )

    async def keep_alive(self, session_id: str, *, deadline: float | None = None) -> None:
        await self._call(
            "POST", "/v1/streaming.keep_alive", {"session_id": session_id}, deadline=deadline
        )

    async def list_sessions(self, *, deadline: float | None = None) -> list[RemoteSession]:
        data = await self._call("GET", "/v1/streaming.list", None, deadline=deadline)
        sessions = data.get("sessions", []) if isinstance(data, dict) else data or []
        return self._parse("streaming.list", _SESSIONS.validate_python, sessions)

    async def create_token(self, *, deadline: float | None = None) -> str:
        """A one-use session token for browser SDKs."""
        data = await self._call("POST", "/v1/streaming.create_token", {}, deadline=deadline)
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ServerError("answer carries no token", endpoint="streaming.create_token")
        return token

    async def list_avatars(self, *, deadline: float | None = None) -> list[Avatar]:
        data = await self._call("GET", "/v1/streaming/avatar.list", None, deadline=deadline)
        # The reference does not pin the shape down: accept a bare list or {"avatars": [...]}.
        avatars = data.get("avatars", []) if isinstance(data, dict) else data or []
        return self._parse("streaming.avatar.list", _AVATARS.validate_python, avatars)

    # --- plumbing ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        deadline: float | None,
        request_timeout: float | None = None,
    ) -> Any:
        endpoint = endpoint_name(path)

        async def attempt() -> Any:
            return await self._attempt(endpoint, method, path, body, deadline, request_timeout)

        return await self._retry.run(endpoint, attempt, deadline=deadline)

    async def _attempt(
        self,
        endpoint: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        deadline: float | None,
        request_timeout: float | None,
    ) -> Any:
        budget = Sender.budget(
            endpoint, request_timeout if request_timeout is not None else self._timeout, deadline
        )
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base + path)
        headers = [
            ("Host", url.netloc.decode("ascii")),
            ("X-Api-Key", self._api_key.get_secret_value()),
            ("Accept", "application/json"),
        ]
        content = b""
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
        request = httpx.Request(
            method,
            url,
            headers=headers,
            # A stream given is taken as is: httpx's content encoding and header preparation
            # were a tenth of the client's CPU per request.
            stream=httpx.ByteStream(content),
            extensions={ENDPOINT_EXTENSION: endpoint, "timeout": Sender.timeouts(budget)},
        )
        request.read()  # marks it read (no copy): wrapping transports may look at .content
        response = await self._sender.send(endpoint, request, budget, self._redact)
        return self._unwrap(endpoint, response)

    def _unwrap(self, endpoint: str, response: httpx.Response) -> Any:
        """The envelope's `data` on success, else the typed error."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            if response.is_success:
                raise ServerError(
                    "answer is not a JSON object",
                    endpoint=endpoint,
                    http_status=response.status_code,
                )
            payload = {"message": response.text[:200] or response.reason_phrase}
        raw_code = payload.get("code")
        message = str(payload.get("message") or "")
        error = payload.get("error")
        if isinstance(error, dict):  # create_token's {"error": {...}, "data": ...} shape
            raw_code = raw_code if raw_code is not None else error.get("code")
            message = message or str(error.get("message") or "")
        elif error:
            message = message or str(error)
        if response.is_success and not error and _is_success(raw_code, message):
            return payload.get("data")
        raise error_from_answer(
            endpoint=endpoint,
            http_status=response.status_code,
            code=_as_code(raw_code),
            message=self._redact(message or f"HTTP {response.status_code}"),
            retry_after=response.headers.get("Retry-After"),
        )

    def _parse(self, endpoint: str, validate: Callable[[Any], M], data: Any) -> M:
        try:
            return validate(data)
        except ValidationError as exc:
            # Without the input values: they may hold access tokens.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise ServerError(f"unexpected answer: {problems}", endpoint=endpoint) from None

    def _redact(self, text: str) -> str:
        key = self._api_key.get_secret_value()
        return text.replace(key, "**********") if key else text


def _as_code(raw: object) -> int | None:
    try:
        return int(str(raw))
    except ValueError:
        return None


def _is_success(raw_code: object, message: str) -> bool:
    if message.strip().lower() == "success":
        return True
    return raw_code is None or str(raw_code).strip().lower() in {"100", "success"}
