"""Settings: every variable is described (the docs' table is made of it), values parse from the
environment."""

from __future__ import annotations

import pytest

from worker.settings import WorkerSettings


def test_every_setting_has_a_description() -> None:
    undescribed = [name for name, f in WorkerSettings.model_fields.items() if not f.description]
    assert undescribed == []


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
