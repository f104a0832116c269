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


def test_an_open_utterance_is_cut_for_the_next_owner() -> None:
    """LITE: the utterance open at the previous owner is not this replica's to continue (its
    link is None), and an interrupted one stays refused."""
    profile = SessionCreate(session_id="s", avatar_id="a", provider="liveavatar", mode="LITE")
    session = Session("s", 0, None, profile, idle_timeout_s=300, max_duration_s=3600)
    session.utterance_id, session.utterance_link = "u2", "la-1"
    session.interrupted_utterance = "u1"
    wire = SessionSnapshot.of(session, "w1").model_dump_json()
    restored = SessionSnapshot.model_validate_json(wire).restore()
    assert (restored.utterance_id, restored.utterance_link) == ("u2", None)
    assert restored.interrupted_utterance == "u1"
    assert restored.mode == "LITE"
