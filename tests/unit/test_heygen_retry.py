"""RetryPolicy: the retry table per endpoint, full jitter, Retry-After, deadline, attempts, hook."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from worker.observability.metrics import HEYGEN_ENDPOINTS
from worker.providers.base import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
    TransportError,
)
from worker.providers.retry import ENDPOINT_SAFETY, OnRetry, RetryPolicy, Safety, is_retried

IDEMPOTENT = [
    "streaming.keep_alive",
    "streaming.interrupt",
    "streaming.stop",
    "streaming.ice",
    "streaming.list",
    "streaming.avatar.list",
]
UNSAFE = ["streaming.new", "streaming.task", "streaming.start", "streaming.create_token"]


def sample(kind: str, endpoint: str = "x") -> ProviderError:
    return {
        "unsent": TransportError("refused", endpoint=endpoint, request_sent=False),
        "sent": TransportError("reset", endpoint=endpoint, request_sent=True),
        "timeout": ProviderTimeoutError("slow", endpoint=endpoint),
        "429": RateLimitedError("slow down", endpoint=endpoint, http_status=429),
        "5xx": ServerError("boom", endpoint=endpoint, http_status=500),
        "auth": AuthenticationError("no", endpoint=endpoint, http_status=401),
        "forbidden": ForbiddenError("no", endpoint=endpoint, http_status=403),
        "closed": SessionClosedError("closed", endpoint=endpoint, code=400006),
        "invalid": InvalidRequestError("bad", endpoint=endpoint, code=40001),
        "capacity": CapacityError("full", endpoint=endpoint, code=10013),
    }[kind]


# kind of error -> (retried on idempotent endpoints, retried on unsafe endpoints)
TABLE = {
    "unsent": (True, True),
    "429": (True, True),
    "sent": (True, False),
    "timeout": (True, False),
    "5xx": (True, False),
    "auth": (False, False),
    "forbidden": (False, False),
    "closed": (False, False),
    "invalid": (False, False),
    "capacity": (False, False),
}


def test_every_endpoint_is_classified() -> None:
    assert set(ENDPOINT_SAFETY) == set(IDEMPOTENT) | set(UNSAFE)
    assert {ENDPOINT_SAFETY[e] for e in IDEMPOTENT} == {Safety.IDEMPOTENT}
    assert {ENDPOINT_SAFETY[e] for e in UNSAFE} == {Safety.UNSAFE}


def test_endpoint_names_are_the_metrics_labels() -> None:
    # The retry hook's endpoint label must match the instrumented transport's.
    assert set(ENDPOINT_SAFETY) <= set(HEYGEN_ENDPOINTS)


@pytest.mark.parametrize("kind", sorted(TABLE))
@pytest.mark.parametrize("endpoint", IDEMPOTENT + UNSAFE)
def test_retry_table(endpoint: str, kind: str) -> None:
    idempotent, unsafe = TABLE[kind]
    expected = idempotent if endpoint in IDEMPOTENT else unsafe
    assert is_retried(endpoint, sample(kind, endpoint)) is expected


@pytest.mark.parametrize("kind", sorted(TABLE))
def test_unknown_endpoint_is_treated_as_unsafe(kind: str) -> None:
    assert is_retried("streaming.something_new", sample(kind)) is TABLE[kind][1]


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_max_delay() -> None:
    top = RetryPolicy(random=lambda: 1.0)
    assert [top.backoff(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert RetryPolicy(random=lambda: 0.0).backoff(5) == 0.0


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(random=rng.random)
    for attempt, ceiling in [(1, 0.2), (3, 0.8), (9, 5.0)]:
        delays = [policy.backoff(attempt) for _ in range(2000)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter, not "equal jitter": the whole range is used, down to near zero.
        assert min(delays) < 0.05 * ceiling
        assert max(delays) > 0.95 * ceiling


def test_retry_after_is_a_floor_not_a_cap() -> None:
    policy = RetryPolicy(random=lambda: 0.5)
    limited = RateLimitedError("slow", endpoint="x", retry_after=2.5)
    assert policy.delay_before_retry(limited, 1) == 2.5
    short = RateLimitedError("slow", endpoint="x", retry_after=0.01)
    assert policy.delay_before_retry(short, 3) == 0.4  # backoff 0.5 * 0.8 is longer
    unknown = RateLimitedError("slow", endpoint="x", retry_after=None)
    assert policy.delay_before_retry(unknown, 1) == 0.1


def test_retry_after_beyond_the_limit_gives_up() -> None:
    policy = RetryPolicy(max_retry_after=10.0)
    limited = RateLimitedError("slow", endpoint="x", retry_after=60.0)
    assert policy.delay_before_retry(limited, 1) is None


# --- run ----------------------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when the policy sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += delay


class Script:
    """A call failing with the given errors in turn, then answering "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def policy_with(
    fake: FakeTime,
    *,
    random: Callable[[], float] = lambda: 0.5,
    base_delay: float = 0.2,
    on_retry: OnRetry | None = None,
) -> RetryPolicy:
    return RetryPolicy(
        sleep=fake.sleep, clock=fake.clock, random=random, base_delay=base_delay, on_retry=on_retry
    )


async def test_retries_until_success_and_reports_each_retry() -> None:
    fake = FakeTime()
    seen: list[tuple[str, str, int, float]] = []
    policy = policy_with(
        fake,
        random=lambda: 1.0,
        on_retry=lambda ep, err, n, delay: seen.append((ep, err.kind, n, delay)),
    )
    call = Script(sample("5xx"), sample("sent"))
    assert await policy.run("streaming.stop", call, deadline=None) == "done"
    assert call.calls == 3
    assert fake.slept == [0.2, 0.4]
    assert seen == [("streaming.stop", "server", 1, 0.2), ("streaming.stop", "transport", 2, 0.4)]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fake = FakeTime()
    last = ServerError("fourth", endpoint="streaming.stop")
    call = Script(sample("5xx"), sample("5xx"), sample("5xx"), last, sample("5xx"))
    with pytest.raises(ServerError) as info:
        await policy_with(fake).run("streaming.stop", call, deadline=None)
    assert info.value is last
    assert (call.calls, len(fake.slept)) == (4, 3)


async def test_not_retried_error_is_raised_at_once() -> None:
    fake = FakeTime()
    call = Script(sample("timeout"))
    with pytest.raises(ProviderTimeoutError):
        await policy_with(fake).run("streaming.task", call, deadline=None)
    assert (call.calls, fake.slept) == (1, [])


async def test_foreign_exceptions_are_not_retried() -> None:
    fake = FakeTime()
    call = Script(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await policy_with(fake).run("streaming.stop", call, deadline=None)
    assert call.calls == 1


async def test_honours_retry_after_on_an_unsafe_endpoint() -> None:
    fake = FakeTime()
    limited = RateLimitedError("slow", endpoint="streaming.new", retry_after=1.5)
    call = Script(limited)
    assert await policy_with(fake, random=lambda: 0.0).run("streaming.new", call, deadline=None)
    assert fake.slept == [1.5]


async def test_never_sleeps_past_the_deadline() -> None:
    fake = FakeTime(now=100.0)
    policy = policy_with(fake, random=lambda: 1.0, base_delay=0.4)
    first = sample("5xx")
    call = Script(first, sample("5xx"))
    with pytest.raises(ServerError) as info:
        await policy.run("streaming.keep_alive", call, deadline=100.3)
    assert info.value is first
    assert (call.calls, fake.slept) == (1, [])


async def test_sleeps_that_fit_before_the_deadline_happen() -> None:
    fake = FakeTime(now=100.0)
    policy = policy_with(fake, random=lambda: 1.0)  # delays 0.2, 0.4, 0.8
    call = Script(sample("5xx"), sample("5xx"), sample("5xx"))
    with pytest.raises(ServerError):
        await policy.run("streaming.keep_alive", call, deadline=100.7)
    # 0.2 then 0.4 end at 100.6; the next 0.8 would cross 100.7.
    assert fake.slept == [0.2, 0.4]
    assert call.calls == 3


async def test_retry_after_past_the_deadline_is_not_waited_for() -> None:
    fake = FakeTime(now=0.0)
    call = Script(RateLimitedError("slow", endpoint="streaming.task", retry_after=5.0))
    with pytest.raises(RateLimitedError):
        await policy_with(fake).run("streaming.task", call, deadline=2.0)
    assert fake.slept == []


async def test_another_providers_table_decides_what_is_retried() -> None:
    fake = FakeTime()
    # "sessions.keep-alive" is unknown to HeyGen's table (unsafe there): its own table says
    # a server error there is worth repeating.
    call = Script(sample("5xx"))
    with pytest.raises(ServerError):
        await policy_with(fake).run("sessions.keep-alive", call, deadline=None)
    call = Script(sample("5xx"))
    own = policy_with(fake)
    assert await own.run("sessions.keep-alive", call, deadline=None, retried=lambda e, _: True)
    assert call.calls == 2
