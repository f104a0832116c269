"""A TCP proxy for partition tests: pass, delay, blackhole (bytes swallowed, sockets kept open:
a silent partition), refuse (new connections closed at once) or reset (all cut with RST)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from enum import StrEnum


class Mode(StrEnum):
    PASS = "pass"
    DELAY = "delay"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


class TcpProxy:
    def __init__(self, target_port: int, *, delay_s: float = 0.2) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.mode = Mode.PASS
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reset(self) -> None:
        """Cut every proxied connection with an RST, as a failed network path eventually does."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.REFUSE:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if self.mode is Mode.BLACKHOLE:
                    continue  # swallowed: the peer sees silence, not a close
                if self.mode is Mode.DELAY:
                    await asyncio.sleep(self.delay_s)
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.close()
