"""The command decoder on hostile input: it returns a Command or raises DecodeError with a
reason, and nothing else, whatever the bytes (hypothesis; random and schema-guided)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.codec import DecodeError, DecodeErrorReason, decode_command
from contracts.commands import COMMAND_TYPES, CommandBase
from tests.reliability.schema_strategy import COMMAND_SCHEMAS, command_documents

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTENT_TYPES = st.sampled_from(["application/json", None, "text/plain", "application/json; x"])


def check(body: bytes, content_type: str | None, message_type: str | None) -> None:
    outcome: CommandBase | DecodeError
    try:
        outcome = decode_command(
            body, content_type=content_type, message_type=message_type, max_bytes=4096
        )
    except DecodeError as err:
        outcome = err
    if isinstance(outcome, DecodeError):
        assert isinstance(outcome.reason, DecodeErrorReason)
        assert str(outcome)
        return
    command = outcome
    assert isinstance(command, CommandBase)
    assert command.type in COMMAND_TYPES


def test_the_schemas_cover_every_command() -> None:
    assert set(COMMAND_SCHEMAS) == set(COMMAND_TYPES)


@FUZZ
@given(st.binary(max_size=5000), CONTENT_TYPES, st.none() | st.sampled_from(sorted(COMMAND_TYPES)))
def test_random_bytes(body: bytes, content_type: str | None, message_type: str | None) -> None:
    check(body, content_type, message_type)


@FUZZ
@given(command_documents(), st.none() | st.sampled_from(sorted(COMMAND_TYPES)))
def test_schema_guided_documents(document: dict[str, Any], message_type: str | None) -> None:
    body = json.dumps(document, default=str).encode()
    check(body, "application/json", message_type)


@FUZZ
@given(command_documents(), st.integers(0, 200), st.binary(max_size=4))
def test_truncated_and_spliced(document: dict[str, Any], cut: int, junk: bytes) -> None:
    body = json.dumps(document, default=str).encode()
    check(body[:cut] + junk + body[cut:], "application/json", None)


def test_atheris_coverage_guided(tmp_path: Path) -> None:
    """20,000 coverage-guided inputs from a corpus of valid commands (skipped without atheris)."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in COMMAND_SCHEMAS:
        document = {"type": name, "session_id": "s-1", "text": "hello", "avatar_id": "a"}
        (corpus / f"{name}.json").write_text(json.dumps(document))
    result = subprocess.run(
        [sys.executable, "-m", "tests.reliability.atheris_decoder", "-runs=20000", str(corpus)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 20000 runs" in result.stderr
