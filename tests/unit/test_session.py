"""Session: the keep-alive jitter drawn when it goes live, and after each keep-alive."""

from __future__ import annotations

from contracts.commands import SessionCreate
from worker.sessions.session import FIRST_KEEPALIVE_JITTER, KEEPALIVE_JITTER, Session


def session() -> Session:
    profile = SessionCreate(session_id="s", avatar_id="a")
    return Session("s", 0, None, profile, idle_timeout_s=300, max_duration_s=3600)


def within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def test_a_new_session_draws_its_first_interval_from_the_wide_range() -> None:
    draws = [session().keepalive_jitter for _ in range(2000)]
    assert all(within(d, FIRST_KEEPALIVE_JITTER) for d in draws)
    # Uniform over the whole range, not bunched at the narrow one's end.
    assert sum(d < 0.5 for d in draws) > 600


def test_after_a_keepalive_the_interval_is_narrow() -> None:
    s = session()
    s.kept_alive()
    assert within(s.keepalive_jitter, KEEPALIVE_JITTER)
    assert s.last_activity > 0


def test_a_takeovers_at_once_keepalive_keeps_the_wide_draw() -> None:
    s = session()
    s.keepalive_jitter = 0.6
    s.last_activity = 0.0  # as the handover restores it: no activity known
    s.kept_alive()
    assert s.keepalive_jitter == 0.6
    assert s.last_activity > 0


def test_going_live_again_draws_widely() -> None:
    s = session()
    s.kept_alive()
    draws = []
    for _ in range(500):
        s.went_live()
        draws.append(s.keepalive_jitter)
    assert all(within(d, FIRST_KEEPALIVE_JITTER) for d in draws)
    assert min(draws) < 0.3
