"""An utterance's audio as LITE chunks, paced: about 0.5 s first (the avatar starts sooner),
then 1 s, as pipecat and LiveKit's plugin send them; never more than `lead_s` ahead of real
time, so a long utterance does not fill LiveAvatar's buffer at once (and an interrupt has
little queued to drop).

A part's audio is all sent before its call returns: nothing waits in the worker between two
parts, so a crash cannot lose audio that a finished part said was sent. A part's last chunk may
therefore be shorter than 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

BYTES_PER_SECOND = 24_000 * 2  # PCM s16le mono, 24 kHz
FIRST_CHUNK_BYTES = BYTES_PER_SECOND // 2
CHUNK_BYTES = BYTES_PER_SECOND


@dataclass(eq=False)
class Utterance:
    """What has been sent of one utterance on one session's ws_url."""

    utterance_id: str
    chunks: int = 0
    sent_s: float = 0.0
    started_at: float | None = None  # time.monotonic() of its first chunk
    cut: asyncio.Event = field(default_factory=asyncio.Event)

    def split(self, pcm: bytes) -> Iterator[bytes]:
        """`pcm` as the next chunks (the first of the utterance about 0.5 s)."""
        at, first = 0, self.chunks == 0
        while at < len(pcm):
            size = FIRST_CHUNK_BYTES if first else CHUNK_BYTES
            yield pcm[at : at + size]
            at, first = at + size, False

    def sent(self, chunk: bytes) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
        self.chunks += 1
        self.sent_s += len(chunk) / BYTES_PER_SECOND

    async def paced(self, lead_s: float) -> bool:
        """Wait until the audio sent is at most `lead_s` ahead of real time; False when an
        interrupt cut the utterance meanwhile."""
        if self.started_at is not None:
            ahead = self.sent_s - (time.monotonic() - self.started_at)
            if ahead > lead_s:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ahead - lead_s):
                        await self.cut.wait()
        return not self.cut.is_set()
