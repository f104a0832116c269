"""Settings: every variable is documented, lists parse from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import WorkerSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    readme = README.read_text()
    names = [f.validation_alias.choices[0] for f in WorkerSettings.model_fields.values()]  # type: ignore[union-attr]
    missing = [name for name in names if f"`{name}`" not in readme]
    assert missing == []


def test_admins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_ADMINS", "ops, root,")
    assert WorkerSettings().admins == frozenset({"ops", "root"})


def test_bad_values_are_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_PARTITIONS", "0")
    with pytest.raises(ValueError, match="WORKER_PARTITIONS"):
        WorkerSettings()


def test_log_format_is_auto_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().log_format == "auto"
    monkeypatch.setenv("LOG_FORMAT", "console")
    assert WorkerSettings().log_format == "console"
    monkeypatch.setenv("LOG_FORMAT", "text")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        WorkerSettings()
