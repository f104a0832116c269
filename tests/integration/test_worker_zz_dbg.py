import asyncio
from contracts.commands import SessionSpeak, SessionStop, SessionInterrupt
from contracts.common import TaskMode
from tests.integration.test_worker_ordering import LONG_TEXT, _speaking

async def test_dbg_stop(producer, simulator) -> None:
    created = await producer.open_session("busy")
    running = SessionSpeak(session_id="busy", text=LONG_TEXT, task_mode=TaskMode.SYNC)
    await producer.send(running)
    await _speaking(simulator, created.heygen_session_id)
    for n in range(2):
        await producer.send(SessionSpeak(session_id="busy", text=f"queued {n}"))
    await producer.call(SessionStop(session_id="busy"))
    await asyncio.sleep(0.5)
    for e in producer.tap.of("busy"):
        print(e.seq, e.type, getattr(e, "code", ""), getattr(e, "usage", ""), getattr(e, "interrupted", ""), getattr(e,"message",""))

async def test_dbg_interrupt(producer, simulator) -> None:
    created = await producer.open_session("x")
    for i in range(5):
        running = SessionSpeak(session_id="x", text=LONG_TEXT, task_mode=TaskMode.SYNC)
        await producer.send(running)
        await _speaking(simulator, created.heygen_session_id)
        await producer.call(SessionInterrupt(session_id="x"))
        fin = await producer.tap.wait_for(lambda e: e.causation_id == running.command_id and e.type == "speech.finished")
        print("interrupted:", fin.interrupted)
