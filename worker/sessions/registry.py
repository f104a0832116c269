"""The sessions this worker owns, kept per partition so a partition can be handed over whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from contracts.common import SessionState
from worker.sessions.session import Session


class CapacityExceeded(RuntimeError):
    pass


class Registry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._partitions: dict[int, dict[str, Session]] = {}
        self._index: dict[str, Session] = {}

    def get(self, session_id: str) -> Session | None:
        return self._index.get(session_id)

    def add(self, session: Session, *, force: bool = False) -> None:
        """Register a session; live sessions count against `max_sessions` from `creating` on.
        `force` adopts one taken over from another replica whatever the count."""
        if session.session_id in self._index:
            raise KeyError(f"session {session.session_id} already registered")
        # Stopped sessions leave at once, so the index size is the live count: O(1).
        if not force and session.live and len(self._index) >= self.max_sessions:
            raise CapacityExceeded(f"this worker holds its maximum of {self.max_sessions} sessions")
        self._index[session.session_id] = session
        self._partitions.setdefault(session.partition, {})[session.session_id] = session

    def remove(self, session_id: str) -> Session | None:
        session = self._index.pop(session_id, None)
        if session is not None:
            self._partitions.get(session.partition, {}).pop(session_id, None)
        return session

    def partition(self, index: int) -> dict[str, Session]:
        return self._partitions.get(index, {})

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._index.values()))

    def __len__(self) -> int:
        return len(self._index)

    def count_by_state(self) -> Counter[tuple[str, SessionState]]:
        """Sessions by (provider, state)."""
        return Counter((s.provider, s.state) for s in self._index.values())
