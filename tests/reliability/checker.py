"""Per-command bookkeeping for fault tests: what was published, what was answered, and what
HeyGen was asked to do, reduced to lost / duplicated side effects / unexpected events."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage

from contracts.codec import decode_event
from contracts.commands import CommandBase, SessionSpeak
from contracts.events import CommandFailed, Event, SessionCreated, SessionReconnected
from simulator.admin import SimulatorStats

TERMINAL = {
    "session.create": {"session.ready"},
    "session.start": {"session.ready"},
    "session.speak": {"speech.started"},
    "session.interrupt": {"speech.interrupted"},
    "session.stop": {"session.stopped"},
    "session.keepalive": {"command.completed"},
    "session.ice": {"command.completed"},
    "sessions.list": {"sessions.listed"},
}
ALWAYS_TERMINAL = {"command.rejected", "command.failed"}
# Events no command caused (pool work), or caused by a command only as a side note.
NON_TERMINAL = {
    "session.created",
    "speech.finished",
    "session.keepalive_failed",
    "session.reconnecting",
    "session.reconnected",
    "session.stopped",
}


@dataclass(frozen=True)
class Sent:
    command_id: str
    session_id: str | None
    type: str
    text: str | None


@dataclass
class Report:
    """The figures a fault test asserts on and prints."""

    name: str
    commands: int = 0
    events: int = 0
    redelivered_events: int = 0  # the same event_id seen again (allowed: at-least-once)
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicate_speaks: int = 0  # HeyGen tasks applied beyond the speaks that may have run
    duplicate_creates: int = 0  # streaming.new applied beyond the sessions the events name
    orphans_live: int = 0  # HeyGen sessions nobody knows about, still running (billed)
    orphans_closed: int = 0  # such sessions that were closed (by the reaper, or HeyGen)
    outcomes: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        top = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.name}: commands={self.commands} events={self.events} "
            f"redelivered_events={self.redelivered_events} lost={len(self.lost)} "
            f"dup_speaks={self.duplicate_speaks} dup_creates={self.duplicate_creates} "
            f"orphans_live={self.orphans_live} orphans_closed={self.orphans_closed} "
            f"unexpected={len(self.unexpected)} [{top}]"
        )


class Checker:
    """Feed it every command sent (`sent`) and every event (`on_message`, an AMQP consumer)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands: dict[str, Sent] = {}
        self.events: dict[str, Event] = {}
        self.redelivered = 0
        self.poison_ids: set[str] = set()
        self._changed = asyncio.Condition()

    def sent(self, command: CommandBase) -> None:
        text = command.text if isinstance(command, SessionSpeak) else None
        session_id = getattr(command, "session_id", None)
        self.commands[command.command_id] = Sent(command.command_id, session_id, command.type, text)

    def sent_poison(self, message_id: str) -> None:
        """A hostile message: its rejection (if any) is expected, it is not a command."""
        self.poison_ids.add(message_id)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        event = decode_event(message.body, content_type=message.content_type)
        async with self._changed:
            if event.event_id in self.events:
                self.redelivered += 1
            else:
                self.events[event.event_id] = event
            self._changed.notify_all()
        await message.ack()

    def terminals(self) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = defaultdict(list)
        for event in self.events.values():
            cause = event.causation_id
            if cause in self.commands:
                allowed = TERMINAL.get(self.commands[cause].type, set()) | ALWAYS_TERMINAL
                if self.commands[cause].type == "session.create" and isinstance(
                    event, SessionCreated
                ):
                    continue  # v2: session.ready follows
                if event.type in allowed:
                    found[cause].append(event)
        return found

    def unanswered(self) -> list[str]:
        answered = self.terminals()
        return [c for c in self.commands if c not in answered]

    async def wait_answered(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Until every command has its terminal event (or the timeout: then report shows lost)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while self.unanswered():
                    await self._changed.wait()
        except TimeoutError:
            # Said now: a test whose waits add up past its own timeout never gets to report.
            missing = [self.commands[c] for c in self.unanswered()]
            print(f"unanswered after {timeout:g} s: {len(missing)}, e.g. {missing[:5]}")

    def heygen_ids(self) -> dict[str, set[str]]:
        """Logical session -> every HeyGen session the events say it used."""
        ids: dict[str, set[str]] = defaultdict(set)
        for event in self.events.values():
            if isinstance(event, SessionCreated | SessionReconnected):
                ids[event.session_id].add(event.heygen_session_id)
        return ids

    def report(self, stats: SimulatorStats) -> Report:
        report = Report(self.name, commands=len(self.commands), events=len(self.events))
        report.redelivered_events = self.redelivered
        terminals = self.terminals()
        report.lost = [c for c in self.commands if c not in terminals]
        for command_id, answers in terminals.items():
            first = answers[0]
            code = f":{getattr(first, 'code', '')}" if first.type.startswith("command.") else ""
            report.outcomes[f"{self.commands[command_id].type}->{first.type}{code}"] += 1
            if len(answers) > 1:
                described = [f"{a.type}:{getattr(a, 'code', '')}:{a.seq}" for a in answers]
                report.unexpected.append(
                    f"{self.commands[command_id]} answered {len(answers)} times: {described}"
                )
        for event in self.events.values():
            cause = event.causation_id
            known = cause is None or cause in self.commands or cause in self.poison_ids
            if not known and event.type != "command.completed":  # test markers
                report.unexpected.append(f"{event.type} caused by unknown {cause}")
        self._side_effects(report, stats, terminals)
        return report

    def _side_effects(
        self, report: Report, stats: SimulatorStats, terminals: dict[str, list[Event]]
    ) -> None:
        ids = self.heygen_ids()
        # Speaks that may have reached HeyGen: answered started, or failed (a cut call may
        # have applied). More applied tasks than that is a speak executed twice.
        maybe_ran: Counter[str] = Counter()
        for command_id, answers in terminals.items():
            sent = self.commands[command_id]
            could_run = any(
                a.type == "speech.started" or isinstance(a, CommandFailed) for a in answers
            )
            if sent.type == "session.speak" and sent.session_id is not None and could_run:
                maybe_ran[sent.session_id] += 1
        for session_id, heygen_ids in ids.items():
            applied = sum(stats.sessions[h].tasks for h in heygen_ids if h in stats.sessions)
            report.duplicate_speaks += max(0, applied - maybe_ran[session_id])
        known = set().union(*ids.values()) if ids else set()
        for heygen_id, session in stats.sessions.items():
            if heygen_id not in known:
                if session.status == "closed":
                    report.orphans_closed += 1
                else:
                    report.orphans_live += 1
        applied_new = stats.count("streaming.new", applied=True)
        report.duplicate_creates = max(0, applied_new - len(known))
