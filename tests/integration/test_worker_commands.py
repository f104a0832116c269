"""Every command end to end: real RabbitMQ, the simulator, an in-process worker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.commands import (
    IceCandidate,
    Sdp,
    SessionIce,
    SessionInterrupt,
    SessionKeepalive,
    SessionsFilter,
    SessionsList,
    SessionSpeak,
    SessionStart,
    SessionStop,
)
from contracts.common import SpeechFinishSource, TaskMode, TaskType
from contracts.events import (
    CommandCompleted,
    CommandRejected,
    SessionCreated,
    SessionReady,
    SessionsListed,
    SessionStopped,
    SpeechFinished,
    SpeechStarted,
)
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    HttpLog,
    Producer,
    answer_to,
    assert_seq_contiguous,
    create,
    drained,
    leftover_commands,
    reply_event,
)
from worker.app import Worker

# 50 ms per word keeps speech short enough to time without slowing the suite.
WORDS_PER_MINUTE = 1200
WORD_S = 60 / WORDS_PER_MINUTE


async def test_create_speak_stop(producer: Producer) -> None:
    ready = await producer.call(create("s1"))
    assert ready.type == "session.ready"
    created = next(e for e in producer.tap.of("s1") if isinstance(e, SessionCreated))
    assert created.url
    assert created.access_token
    assert created.heygen_session_id
    started = await producer.call(SessionSpeak(session_id="s1", text="Hello there, how are you?"))
    assert isinstance(started, SpeechStarted)
    assert started.task_id
    assert started.duration_ms
    assert started.duration_ms > 0
    done = await producer.call(SessionKeepalive(session_id="s1"))
    assert done.type == "command.completed"
    stopped = await producer.call(SessionStop(session_id="s1", reason="bye"))
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason == "requested"
    assert stopped.usage.tasks == 1
    assert stopped.usage.characters == len("Hello there, how are you?")
    seqs = [e.seq for e in producer.tap.of("s1")]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_create_v2_carries_connection_details_and_common_fields(
    producer: Producer, simulator: RunningSimulator, worker: Worker
) -> None:
    command = create("v2-a", correlation_id="corr-v2")
    ready = await producer.call(command)
    assert ready.type == "session.ready"
    created, ready_again = producer.tap.caused_by(command)
    assert isinstance(created, SessionCreated)
    assert ready_again is ready
    assert created.version == "v2"
    assert created.url
    assert created.url.startswith("wss://")
    assert created.access_token
    assert created.realtime_endpoint
    assert created.sdp is None
    stats = await simulator.admin.stats()
    assert stats.sessions[created.heygen_session_id].status == "connected"
    assert isinstance(ready, SessionReady)
    assert ready.heygen_session_id == created.heygen_session_id
    for event in (created, ready):
        assert event.causation_id == command.command_id
        assert event.correlation_id == "corr-v2"
        assert event.worker_id == worker.settings.worker_id
        assert event.event_id
        assert event.occurred_at.tzinfo is not None
    assert [created.seq, ready.seq] == [1, 2]


async def test_create_v1_offer_answer_and_ice(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await producer.call(create("v1-a", version="v1"))
    assert isinstance(created, SessionCreated), created
    assert created.version == "v1"
    assert created.sdp is not None
    assert created.sdp.type == "offer"
    assert created.sdp.sdp
    assert created.ice_servers
    assert created.ice_servers[0].urls
    assert created.access_token is None
    heygen_id = created.heygen_session_id
    assert (await simulator.admin.stats()).sessions[heygen_id].status == "new"
    # Not started yet: speech is refused with a code a program can act on.
    early = await producer.call(SessionSpeak(session_id="v1-a", text="too early"))
    assert isinstance(early, CommandRejected)
    assert early.code == "wrong_state"

    ready = await producer.call(
        SessionStart(session_id="v1-a", sdp=Sdp(sdp="v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"))
    )
    assert ready.type == "session.ready"
    done = await producer.call(
        SessionIce(
            session_id="v1-a",
            candidate=IceCandidate(
                candidate="candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host",
                sdpMid="0",
                sdpMLineIndex=0,
            ),
        )
    )
    assert done.type == "command.completed"
    session = (await simulator.admin.stats()).sessions[heygen_id]
    assert (session.status, session.ice_candidates) == ("connected", 1)
    assert_seq_contiguous(producer.tap.events)


@pytest.mark.parametrize("task_type", list(TaskType))
@pytest.mark.parametrize("task_mode", list(TaskMode))
async def test_speak(
    producer: Producer, simulator: RunningSimulator, task_type: TaskType, task_mode: TaskMode
) -> None:
    await simulator.admin.configure(words_per_minute=WORDS_PER_MINUTE)
    await producer.open_session("talker")
    text = "one two three four five six"  # 6 words: 300 ms of speech
    command = SessionSpeak(session_id="talker", text=text, task_type=task_type, task_mode=task_mode)
    started = await producer.call(command)
    assert isinstance(started, SpeechStarted), started
    assert started.task_id
    assert started.duration_ms is not None
    assert started.duration_ms == pytest.approx(6 * WORD_S * 1000)
    assert (started.task_type, started.task_mode, started.characters) == (
        task_type,
        task_mode,
        len(text),
    )
    finished = await producer.tap.wait_for(answer_to(command, {"speech.finished"}))
    assert isinstance(finished, SpeechFinished)
    assert finished.task_id == started.task_id
    assert not finished.interrupted
    speech_s = started.duration_ms / 1000
    gap = (finished.occurred_at - started.occurred_at).total_seconds()
    waited = (started.occurred_at - command.sent_at).total_seconds()
    if task_mode is TaskMode.SYNC:
        # HeyGen answered at the end of the speech; the finish is observed right then.
        assert finished.source is SpeechFinishSource.OBSERVED
        assert waited >= speech_s * 0.9
        assert gap < 0.25
    else:
        # HeyGen accepted it at once; the finish is estimated from duration_ms.
        assert finished.source is SpeechFinishSource.ESTIMATED
        assert waited < speech_s
        assert speech_s * 0.7 <= gap <= speech_s + 1.0
    stats = await simulator.admin.stats()
    assert stats.count("streaming.task", applied=True) == 1
    assert_seq_contiguous(producer.tap.events)


async def test_interrupt_and_keepalive(producer: Producer, simulator: RunningSimulator) -> None:
    await simulator.admin.configure(words_per_minute=WORDS_PER_MINUTE)
    created = await producer.open_session("ctl")
    cut = SessionSpeak(session_id="ctl", text=" ".join(["cut"] * 8))  # 0.4 s, async
    cut_started = await producer.call(cut)
    interrupted = await producer.call(SessionInterrupt(session_id="ctl"))
    assert interrupted.type == "speech.interrupted"
    # HeyGen's queue is dropped: the next speech is not estimated to end after the cut one.
    after = SessionSpeak(session_id="ctl", text="two words")
    after_started = await producer.call(after)
    after_finished = await producer.tap.wait_for(answer_to(after, {"speech.finished"}))
    gap = (after_finished.occurred_at - after_started.occurred_at).total_seconds()
    assert gap < 4 * WORD_S
    # Nor does the cut speech report an estimated finish once its time is up.
    cut_end = cut_started.occurred_at.timestamp() + 8 * WORD_S + 0.1
    await asyncio.sleep(max(0.0, cut_end - time.time()))
    assert not [e for e in producer.tap.caused_by(cut) if e.type == "speech.finished"]

    done = await producer.call(SessionKeepalive(session_id="ctl"))
    assert done.type == "command.completed"
    assert isinstance(done, CommandCompleted)
    assert done.command_type == "session.keepalive"
    session = (await simulator.admin.stats()).sessions[created.heygen_session_id]
    assert (session.interrupts, session.keep_alives) == (1, 1)
    assert_seq_contiguous(producer.tap.events)


async def test_stop_reports_usage(producer: Producer, simulator: RunningSimulator) -> None:
    await simulator.admin.configure(words_per_minute=WORDS_PER_MINUTE)
    created = await producer.open_session("usage")
    texts = ["first words", "and then some more"]
    for text in texts:
        await producer.call(SessionSpeak(session_id="usage", text=text, task_mode=TaskMode.SYNC))
    stopped = await producer.call(SessionStop(session_id="usage", reason="done"))
    assert isinstance(stopped, SessionStopped)
    assert (stopped.reason, stopped.detail) == ("requested", "done")
    assert stopped.heygen_session_id == created.heygen_session_id
    usage = stopped.usage
    assert usage.tasks == 2
    assert usage.characters == sum(map(len, texts))
    assert usage.billed_seconds >= 6 * WORD_S * 0.9
    assert usage.credits_estimate > 0
    assert usage.credits_estimate == pytest.approx(usage.billed_seconds / 60 * 0.2, abs=1e-4)
    session = (await simulator.admin.stats()).sessions[created.heygen_session_id]
    assert (session.status, session.closed_reason) == ("closed", "stopped")


async def test_sessions_list_replies_to_reply_to(
    producer: Producer, simulator: RunningSimulator
) -> None:
    first = await producer.open_session("listed-1")
    second = await producer.open_session("listed-2")
    await producer.open_session("gone")
    await producer.call(SessionStop(session_id="gone"))
    async with producer.inbox() as inbox:
        await producer.send(SessionsList(reply_to=inbox.name, correlation_id="corr-list"))
        message = await inbox.next()
        assert message.correlation_id == "corr-list"
        reply = reply_event(message)
        assert isinstance(reply, SessionsListed)
        assert reply.correlation_id == "corr-list"
        assert not reply.truncated
        listed = {s.session_id: s for s in reply.sessions}
        assert set(listed) == {"listed-1", "listed-2"}
        for info, created in ((listed["listed-1"], first), (listed["listed-2"], second)):
            assert info.heygen_session_id == created.heygen_session_id
            assert (info.state, info.heygen_status) == ("ready", "connected")

        # HeyGen closed one behind the worker's back: the reconciliation shows it.
        await simulator.admin.close_session(second.heygen_session_id)
        only = SessionsList(
            reply_to=inbox.name, filter=SessionsFilter(session_ids=["listed-2", "gone"])
        )
        await producer.send(only)
        filtered = reply_event(await inbox.next())
        assert isinstance(filtered, SessionsListed)
        assert filtered.causation_id == only.command_id
        assert [(s.session_id, s.heygen_status) for s in filtered.sessions] == [
            ("listed-2", "absent")
        ]


async def test_sessions_list_without_reply_to_is_rejected(producer: Producer) -> None:
    rejected = await producer.call(SessionsList())
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "validation"


@pytest.mark.parametrize(
    "command",
    [
        SessionSpeak(session_id="nobody", text="hello"),
        SessionInterrupt(session_id="nobody"),
        SessionKeepalive(session_id="nobody"),
        SessionStop(session_id="nobody"),
    ],
    ids=lambda c: c.type,
)
async def test_unknown_session_is_rejected(
    producer: Producer, simulator: RunningSimulator, command: SessionSpeak
) -> None:
    rejected = await producer.call(command)
    assert isinstance(rejected, CommandRejected)
    assert (rejected.code, rejected.session_id, rejected.command_type) == (
        "unknown_session",
        "nobody",
        command.type,
    )
    assert (await simulator.admin.stats()).requests_total == 0


async def test_stopped_session_is_rejected(producer: Producer, simulator: RunningSimulator) -> None:
    await producer.open_session("ended")
    await producer.call(SessionStop(session_id="ended"))
    for command in (SessionSpeak(session_id="ended", text="late"), SessionStop(session_id="ended")):
        rejected = await producer.call(command)
        assert isinstance(rejected, CommandRejected)
        assert rejected.code == "unknown_session"
    stats = await simulator.admin.stats()
    assert (stats.count("streaming.task"), stats.count("streaming.stop")) == (0, 1)
    assert_seq_contiguous(producer.tap.events)


async def test_create_existing_session_is_rejected(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await producer.open_session("twice")
    rejected = await producer.call(create("twice"))
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "session_exists"
    assert (await simulator.admin.stats()).count("streaming.new") == 1
    # The live session is untouched.
    started = await producer.call(SessionSpeak(session_id="twice", text="still here"))
    assert started.type == "speech.started"
    assert_seq_contiguous(producer.tap.events)


async def test_expired_commands_are_not_executed(
    producer: Producer, simulator: RunningSimulator
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await producer.open_session("late")
    for command in (
        SessionSpeak(session_id="late", text="too late", deadline=past),
        create("late-create", deadline=past),
    ):
        rejected = await producer.call(command)
        assert isinstance(rejected, CommandRejected)
        assert rejected.code == "expired"
        assert rejected.command_type == command.type
    stats = await simulator.admin.stats()
    assert stats.count("streaming.task") == 0
    assert stats.count("streaming.new") == 1  # the "late" session only
    # A deadline in the future is honoured normally.
    future = datetime.now(UTC) + timedelta(seconds=30)
    started = await producer.call(SessionSpeak(session_id="late", text="on time", deadline=future))
    assert started.type == "speech.started"


async def test_deadline_passing_while_queued_is_not_executed(
    producer: Producer, simulator: RunningSimulator, http_log: HttpLog
) -> None:
    """The deadline is checked when the command's turn comes, not only on arrival."""
    await simulator.admin.configure(words_per_minute=WORDS_PER_MINUTE)
    await producer.open_session("queued")
    ahead = SessionSpeak(session_id="queued", text=" ".join(["w"] * 12), task_mode=TaskMode.SYNC)
    late = SessionSpeak(
        session_id="queued",
        text="by the time my turn comes it is too late",
        deadline=datetime.now(UTC) + timedelta(seconds=12 * WORD_S / 2),
    )
    await producer.send(ahead)
    await producer.send(late)
    rejected = await producer.tap.wait_for(answer_to(late))
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "expired"
    assert [x.body["text"] for x in http_log.of("streaming.task")] == [ahead.text]


async def test_duplicate_commands_run_once_and_are_acked(
    producer: Producer,
    simulator: RunningSimulator,
    worker: Worker,
    connection: AbstractRobustConnection,
    http_log: HttpLog,
) -> None:
    opening = create("dup")
    await producer.send(opening)
    await producer.send(opening)  # a producer's retry of the create
    await producer.tap.wait_for(lambda e: e.type == "session.ready")
    speak = SessionSpeak(session_id="dup", text="only once please", task_mode=TaskMode.SYNC)
    await producer.send(speak)
    await producer.send(speak)  # arrives while the first copy is still running
    await producer.tap.wait_for(lambda e: e.type == "speech.finished")
    await producer.send(speak)  # arrives after it finished (a redelivery)
    await drained(connection, worker)
    await producer.settle()

    stats = await simulator.admin.stats()
    assert (stats.count("streaming.new"), stats.count("streaming.task")) == (1, 1)
    assert len(http_log.of("streaming.task")) == 1
    kinds = [e.type for e in producer.tap.of("dup")]
    assert kinds == ["session.created", "session.ready", "speech.started", "speech.finished"]
    # Acked, not merely held: nothing comes back when the worker lets go of its channels.
    await worker.shutdown()
    assert await leftover_commands(connection, worker.settings.partitions) == []


@pytest.mark.parametrize("worker_overrides", [{"heygen_timeout_s": 0.5}])
async def test_sync_speak_may_outlast_the_http_timeout(
    producer: Producer, simulator: RunningSimulator
) -> None:
    """A sync task answers when the speech ends, which can be long after any usual timeout."""
    await simulator.admin.configure(words_per_minute=WORDS_PER_MINUTE)
    await producer.open_session("slow")
    speak = SessionSpeak(session_id="slow", text=" ".join(["word"] * 20), task_mode=TaskMode.SYNC)
    started = await producer.call(speak)
    assert isinstance(started, SpeechStarted), started
    finished = await producer.tap.wait_for(
        lambda e: e.causation_id == speak.command_id and e.type != "speech.started"
    )
    assert isinstance(finished, SpeechFinished)
    assert finished.source is SpeechFinishSource.OBSERVED
    assert (await simulator.admin.stats()).count("streaming.task") == 1
