"""Settings: every variable is documented, lists parse from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
# The README's table, and docs/liveavatar.md for the LiveAvatar settings.
DOCUMENTED_IN = (ROOT / "README.md", ROOT / "docs" / "liveavatar.md")


def test_every_setting_is_in_the_readme_table() -> None:
    readme = "".join(path.read_text() for path in DOCUMENTED_IN)
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
