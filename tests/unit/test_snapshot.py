"""SessionSnapshot: a LiveAvatar session travels to the next owner with its provider and the
secret that re-joins its room, which the snapshot's repr and the session's never show."""

from __future__ import annotations

from pydantic import SecretStr

from contracts.commands import SessionCreate
from worker.sessions.session import Session
from worker.sessions.snapshot import SessionSnapshot

RESUME = '{"url": "wss://room.example", "token": "agent-token-7f3a"}'


def test_provider_and_resume_survive_the_state_stream() -> None:
    profile = SessionCreate(session_id="s", avatar_id="a", provider="liveavatar")
    session = Session("s", 3, "me", profile, idle_timeout_s=300, max_duration_s=3600)
    session.provider = "liveavatar"
    session.heygen_session_id = "la-1"
    session.resume = SecretStr(RESUME)
    wire = SessionSnapshot.of(session, "w1").model_dump_json()
    restored = SessionSnapshot.model_validate_json(wire).restore()
    assert restored.provider == "liveavatar"
    assert restored.heygen_session_id == "la-1"
    assert restored.resume is not None
    assert restored.resume.get_secret_value() == RESUME
    assert "agent-token" not in repr(restored)


def test_a_legacy_snapshot_is_a_heygen_session_without_resume() -> None:
    profile = SessionCreate(session_id="s", avatar_id="a")
    session = Session("s", 0, None, profile, idle_timeout_s=300, max_duration_s=3600)
    wire = SessionSnapshot.of(session, "w1").model_dump(mode="json")
    del wire["provider"], wire["resume"]  # written before providers existed
    restored = SessionSnapshot.model_validate(wire).restore()
    assert (restored.provider, restored.resume) == ("heygen", None)
