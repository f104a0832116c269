"""The worker's small HTTP server: /metrics, /healthz (alive) and /readyz (ready for traffic)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

Readiness = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves `registry` and the answer of `readiness()` ((ready, reason)) on host:port;
    port 0 binds a free port, which `port` then reports."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        host: str = "0.0.0.0",
        port: int = 9464,
    ) -> None:
        self._registry = registry
        self._readiness = readiness
        self._host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("HealthServer is not started")
        port: int = self._socket.getsockname()[1]
        return port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # Scrapes and probes every few seconds would drown the logs.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # Our own socket: its bound port is public API, unlike the site's internals.
        sock = socket.create_server((self._host, self._requested_port))
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._socket, self._runner = sock, runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _metrics(self, request: web.Request) -> web.Response:
        # Negotiates OpenMetrics when Prometheus asks for it, the text format otherwise.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(self._registry))
        response.headers["Content-Type"] = content_type
        return response

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, reason = self._readiness()
        return web.Response(
            status=200 if ready else 503, text=reason or ("ready" if ready else "not ready")
        )
