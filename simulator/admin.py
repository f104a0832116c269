"""An async client of the simulator's /_admin API, for tests, benchmarks and demos."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import BaseModel

from simulator.settings import ANY_ENDPOINT, FaultSpec


class SessionStats(BaseModel):
    status: str
    version: str
    avatar_id: str
    keep_alives: int
    tasks: int
    characters: int
    interrupts: int
    ice_candidates: int
    speaking: bool
    created_at: float
    closed_at: float | None
    closed_reason: str | None
    api_key_hint: str


class RequestRecord(BaseModel):
    endpoint: str
    session_id: str | None
    status: int  # 0: the connection was closed without an answer
    applied: bool  # the endpoint's effect happened (whatever the answer)
    at: float


class SimulatorStats(BaseModel):
    calls: dict[str, int]
    live_sessions: int
    sessions: dict[str, SessionStats]
    requests_total: int
    requests: list[RequestRecord] = []

    def count(
        self, endpoint: str, session_id: str | None = None, *, applied: bool | None = None
    ) -> int:
        """Requests in the log for an endpoint, optionally of one session and by effect."""
        return sum(
            1
            for r in self.requests
            if r.endpoint == endpoint
            and (session_id is None or r.session_id == session_id)
            and (applied is None or r.applied == applied)
        )


class SimulatorAdmin:
    """SimulatorAdmin("http://127.0.0.1:8090"); use as an async context manager or aclose()."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout)

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
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    async def set_fault(
        self,
        endpoint: str = ANY_ENDPOINT,
        *,
        rate: float = 1.0,
        status: int | None = None,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        hang_s: float = 0.0,
        reset: bool = False,
        count: int | None = None,
        apply_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Add a fault (see FaultSpec); returns the active faults."""
        spec = FaultSpec(
            endpoint=endpoint,
            rate=rate,
            status=status,
            code=code,
            message=message,
            retry_after=retry_after,
            hang_s=hang_s,
            reset=reset,
            count=count,
            apply_first=apply_first,
        )
        body = spec.model_dump(mode="json", exclude_defaults=True)
        faults: list[dict[str, Any]] = (await self._call("POST", "/_admin/faults", json=body))[
            "faults"
        ]
        return faults

    async def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = (await self._call("GET", "/_admin/faults"))["faults"]
        return faults

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_admin/faults")

    async def close_session(self, session_id: str) -> SessionStats:
        """Close a session as if HeyGen dropped it; HTTPStatusError 404 unknown, 409 closed."""
        data = await self._call("POST", f"/_admin/sessions/{session_id}/close")
        return SessionStats.model_validate(data)

    async def reset(self) -> None:
        await self._call("POST", "/_admin/reset")

    async def configure(self, **changes: Any) -> dict[str, Any]:
        """Change run-time settings (idle_timeout_override_s, concurrency_limit, latency, ...)."""
        config: dict[str, Any] = await self._call("PATCH", "/_admin/config", json=changes)
        return config

    async def stats(self, *, include_requests: bool = True) -> SimulatorStats:
        params = {} if include_requests else {"requests": "0"}
        return SimulatorStats.model_validate(
            await self._call("GET", "/_admin/stats", params=params)
        )
