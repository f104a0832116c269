"""The simulator's pure logic with a fake clock: sessions, expiry, speech, faults, settings."""

from __future__ import annotations

import random
import time

import pytest
from pydantic import ValidationError

from simulator.errors import CONCURRENT_LIMIT, WRONG_STATE, ApiError
from simulator.faults import FaultInjector, fault_error
from simulator.ratelimit import RateLimiter
from simulator.settings import FaultSpec, SimulatorSettings
from simulator.state import CloseReason, SessionStore, Status, key_hint, speech_duration_ms
from simulator.validation import NewSessionParams, parse_new


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def params(idle: int = 120, rate: float = 1.0) -> NewSessionParams:
    return NewSessionParams("v2", "avatar", "", rate, "low", "VP8", idle)


def make_store(clock: FakeClock, cuts: list[str] | None = None, **settings: object) -> SessionStore:
    return SessionStore(
        SimulatorSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
        wall_clock=lambda: clock.now + 1_700_000_000,
        on_speech_cut=(cuts if cuts is not None else []).append,
    )


def test_speech_duration_follows_words_per_minute_and_rate() -> None:
    text = " ".join(["word"] * 150)
    assert speech_duration_ms(text, 150) == 60_000
    assert speech_duration_ms(text, 300) == 30_000
    assert speech_duration_ms(text, 150, rate=1.5) == 40_000
    assert speech_duration_ms("hi", 150) == 400


def test_session_goes_new_connecting_connected_closed() -> None:
    clock = FakeClock()
    store = make_store(clock, connect_delay_s=2)
    session = store.create("key", params())
    assert store.status(session) is Status.NEW
    with pytest.raises(ApiError) as before_start:
        store.speak(session, "too early")
    assert before_start.value.code == WRONG_STATE
    store.start(session)
    assert store.status(session) is Status.CONNECTING
    with pytest.raises(ApiError):
        store.speak(session, "still connecting")
    clock.advance(2)
    assert store.status(session) is Status.CONNECTED
    store.speak(session, "hello")
    with pytest.raises(ApiError):
        store.start(session)  # a second start
    store.close(session, CloseReason.STOPPED)
    assert store.status(session) is Status.CLOSED
    with pytest.raises(ApiError) as after_close:
        store.live("key", session.session_id)
    assert after_close.value.code == WRONG_STATE


def test_sessions_of_another_key_are_unknown() -> None:
    store = make_store(FakeClock())
    session = store.create("key-a", params())
    assert store.live("key-a", session.session_id) is session
    with pytest.raises(ApiError):
        store.live("key-b", session.session_id)
    assert store.live_sessions("key-b") == []


def test_idle_session_closes_at_its_deadline_unless_kept_alive() -> None:
    clock = FakeClock()
    store = make_store(clock)
    idle = store.create("key", params(idle=30))
    kept = store.create("key", params(idle=30))
    for _ in range(4):
        clock.advance(20)
        store.keep_alive(kept)
    assert store.expire_due() == 1
    assert idle.closed_reason is CloseReason.IDLE
    # closed_at is when the deadline passed, not when it was noticed.
    assert idle.closed_wall == pytest.approx(1000 + 30 + 1_700_000_000)
    assert kept.closed_reason is None
    assert store.live_count == 1


def test_override_replaces_every_timeout_even_at_run_time() -> None:
    clock = FakeClock()
    store = make_store(clock)
    session = store.create("key", params(idle=3600))
    clock.advance(5)
    store.configure(SimulatorSettings(idle_timeout_override_s=2))
    assert store.expire_due() == 1
    assert session.closed_reason is CloseReason.IDLE


def test_speech_is_activity_and_interrupt_cuts_it_short() -> None:
    clock = FakeClock()
    cuts: list[str] = []
    store = make_store(clock, cuts, idle_timeout_override_s=10)
    session = store.create("key", params())
    store.start(session)
    first = store.speak(session, " ".join(["word"] * 150))  # 60 s
    second = store.speak(session, " ".join(["word"] * 15))  # queued behind: 6 s more
    assert first.duration_ms == 60_000
    assert second.ends_at == pytest.approx(clock.now + 66)
    clock.advance(30)
    assert store.expire_due() == 0  # speaking, so not idle
    assert store.speaking(session)
    store.interrupt(session)
    assert cuts == [session.session_id]
    assert not store.speaking(session)
    clock.advance(9)
    assert store.expire_due() == 0
    clock.advance(1)
    assert store.expire_due() == 1  # 10 s after the interrupt, not after the queued speech


def test_interrupt_while_silent_cuts_nothing() -> None:
    cuts: list[str] = []
    store = make_store(FakeClock(), cuts)
    session = store.create("key", params())
    store.interrupt(session)
    assert cuts == []
    assert session.interrupts == 1


def test_concurrency_limit_is_per_key_and_freed_by_closing() -> None:
    store = make_store(FakeClock(), concurrency_limit=2)
    first = store.create("key-a", params())
    store.create("key-a", params())
    with pytest.raises(ApiError) as refused:
        store.create("key-a", params())
    assert (refused.value.status, refused.value.code) == (400, CONCURRENT_LIMIT)
    store.create("key-b", params())
    store.close(first, CloseReason.STOPPED)
    store.create("key-a", params())


def test_idle_sessions_free_their_slot_without_a_sweep() -> None:
    clock = FakeClock()
    store = make_store(clock, concurrency_limit=1)
    store.create("key", params(idle=30))
    clock.advance(31)
    store.create("key", params())  # the lazy check on access closed the idle one


def test_duration_limit_closes_even_busy_sessions_when_enforced() -> None:
    clock = FakeClock()
    store = make_store(clock, enforce_session_duration_limit=True, session_duration_limit_s=60)
    session = store.create("key", params())
    for _ in range(5):
        clock.advance(10)
        store.keep_alive(store.live("key", session.session_id))
    clock.advance(10)
    with pytest.raises(ApiError):
        store.live("key", session.session_id)
    assert session.closed_reason is CloseReason.DURATION_LIMIT


def test_ten_thousand_sessions_are_cheap() -> None:
    clock = FakeClock()
    store = make_store(clock, concurrency_limit=20_000)
    sessions = [store.create("key", params(idle=30)) for _ in range(10_000)]
    started = time.perf_counter()
    for round_ in range(5):
        clock.advance(10)
        for session in sessions[round_ % 2 :: 2]:
            store.keep_alive(session)
        store.expire_due()
    clock.advance(100)
    assert store.expire_due() == 10_000
    assert time.perf_counter() - started < 2
    assert store.live_count == 0


def test_closed_sessions_kept_is_bounded() -> None:
    store = make_store(FakeClock(), closed_sessions_kept=2)
    sessions = [store.create("key", params()) for _ in range(3)]
    for session in sessions:
        store.close(session, CloseReason.STOPPED)
    assert [s.session_id for s in store.all_sessions()] == [s.session_id for s in sessions[1:]]


def test_key_hint_does_not_reveal_the_key() -> None:
    hint = key_hint("secret-api-key-1234")
    assert "1234" not in hint
    assert hint == key_hint("secret-api-key-1234") != key_hint("another")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"avatar_id": ""},
        {"avatar_id": "a", "quality": "ultra"},
        {"avatar_id": "a", "voice": {"rate": 1.6}},
        {"avatar_id": "a", "voice": {"rate": True}},
        {"avatar_id": "a", "voice": {"emotion": "Angry"}},
        {"avatar_id": "a", "video_encoding": "AV1"},
        {"avatar_id": "a", "activity_idle_timeout": 29},
        {"avatar_id": "a", "activity_idle_timeout": 3601},
        {"avatar_id": "a", "activity_idle_timeout": 30.5},
        {"avatar_id": "a", "version": "v3"},
        {"avatar_id": "a", "stt_settings": {"provider": "whisper"}},
        {"avatar_id": "a", "voice": "Excited"},
    ],
)
def test_new_session_bodies_are_validated(body: dict[str, object]) -> None:
    with pytest.raises(ApiError) as invalid:
        parse_new(body)
    assert (invalid.value.status, invalid.value.code) == (400, 40001)


def test_new_session_defaults_and_avatar_name() -> None:
    parsed = parse_new({"avatar_name": "Wayne", "voice": {"rate": 0.5, "emotion": "Serious"}})
    assert parsed == NewSessionParams("v1", "Wayne", "", 0.5, "low", "VP8", 120)


def test_fault_rate_count_and_endpoint() -> None:
    injector = FaultInjector([FaultSpec(endpoint="streaming.task", rate=0.5)], random.Random(3))
    fired = sum(injector.pick("streaming.task") is not None for _ in range(1000))
    assert 400 < fired < 600
    assert injector.pick("streaming.stop") is None
    injector.clear()
    injector.add(FaultSpec(count=2))
    assert [injector.pick("streaming.new") is not None for _ in range(3)] == [True, True, False]
    assert injector.describe() == []


def test_fault_error_defaults() -> None:
    server_error = fault_error(FaultSpec())
    assert server_error is not None
    assert (server_error.status, server_error.code) == (500, 500)
    limited = fault_error(FaultSpec(status=429, retry_after=3))
    assert limited is not None
    assert (limited.status, limited.retry_after) == (429, 3)
    custom = fault_error(FaultSpec(status=400, code=400014, message="Avatar version deprecated"))
    assert custom is not None
    assert (custom.code, custom.message) == (400014, "Avatar version deprecated")
    assert fault_error(FaultSpec(hang_s=1)) is None
    assert fault_error(FaultSpec(reset=True)) is None


def test_fault_spec_rejects_unknown_endpoint_and_bad_rate() -> None:
    with pytest.raises(ValidationError):
        FaultSpec(endpoint="streaming.speak")
    with pytest.raises(ValidationError):
        FaultSpec(rate=1.5)


def test_rate_limiter_refills_over_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limiter.take("key", rate_per_s=2, burst=2)
    limiter.take("key", rate_per_s=2, burst=2)
    with pytest.raises(ApiError) as limited:
        limiter.take("key", rate_per_s=2, burst=2)
    assert (limited.value.status, limited.value.retry_after) == (429, 1)
    limiter.take("other", rate_per_s=2, burst=2)
    clock.advance(0.5)
    limiter.take("key", rate_per_s=2, burst=2)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMULATOR_API_KEYS", "k1, k2")
    monkeypatch.setenv("SIMULATOR_FORBIDDEN_KEYS", '["bad"]')
    monkeypatch.setenv("SIMULATOR_LATENCY", '{"streaming.task": {"fixed_ms": 5}}')
    monkeypatch.setenv("SIMULATOR_FAULTS", '[{"endpoint": "streaming.new", "status": 503}]')
    monkeypatch.setenv("SIMULATOR_PORT", "9000")
    settings = SimulatorSettings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]
    assert [k.get_secret_value() for k in settings.forbidden_keys] == ["bad"]
    assert settings.latency["streaming.task"].fixed_ms == 5
    assert settings.faults[0].status == 503
    assert settings.port == 9000
    assert "k1" not in repr(settings)


def test_patched_settings_validate_and_refuse_start_up_only_fields() -> None:
    settings = SimulatorSettings(api_keys=["k"])
    patched = settings.patched({"idle_timeout_override_s": 1.5, "concurrency_limit": 3})
    assert (patched.idle_timeout_override_s, patched.concurrency_limit) == (1.5, 3)
    assert patched.api_keys[0].get_secret_value() == "k"
    with pytest.raises(ValueError, match="not changeable"):
        settings.patched({"port": 1})
    with pytest.raises(ValueError, match="concurrency_limit"):
        settings.patched({"concurrency_limit": -1})
