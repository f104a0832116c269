"""The docs' generated parts: a page is rewritten from the code, and the check fails on drift."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import docsgen
from worker.settings import WorkerSettings


def _page(root: Path, body: str) -> Path:
    page = root / "docs" / "page.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    blocks = "".join(
        f"<!-- generated: {name} -->\n{body}\n<!-- end: {name} -->\n\n"
        for name in docsgen.GENERATORS
    )
    page.write_text(f"# Page\n\n{blocks}Prose after.\n")
    return page


def test_write_fills_every_block_and_then_the_check_passes(tmp_path: Path) -> None:
    page = _page(tmp_path, "PLACEHOLDER")
    assert docsgen.drifted(tmp_path) == (["docs/page.md"], [])
    assert docsgen.main(["check"], tmp_path) == 1
    assert docsgen.write(tmp_path) == ["docs/page.md"]
    text = page.read_text()
    assert "PLACEHOLDER" not in text
    assert "| `WORKER_PARTITIONS` | `8` |" in text
    assert text.endswith("Prose after.\n")
    assert docsgen.main(["check"], tmp_path) == 0


def test_a_code_change_without_regenerating_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _page(tmp_path, "")
    docsgen.write(tmp_path)
    field = WorkerSettings.model_fields["partitions"]
    monkeypatch.setattr(field, "description", "A new meaning.")
    assert docsgen.drifted(tmp_path) == (["docs/page.md"], [])


def test_a_generator_no_page_uses_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("<!-- generated: cli -->\n<!-- end: cli -->\n")
    docsgen.write(tmp_path)
    assert docsgen.drifted(tmp_path)[1] == sorted(set(docsgen.GENERATORS) - {"cli"})


def test_every_setting_metric_and_alert_is_in_its_table() -> None:
    settings = docsgen.settings_table()
    names = [docsgen.variable(field) for field in WorkerSettings.model_fields.values()]
    assert [name for name in names if f"| `{name}` |" not in settings] == []
    assert "| `heygen_worker_commands_total` | counter | outcome, type |" in docsgen.metrics_table()
    rules = yaml.safe_load(docsgen.ALERTS.read_text())["groups"]
    alerts = [rule["alert"] for group in rules for rule in group["rules"] if "alert" in rule]
    runbooks = docsgen.alert_runbooks()
    assert [line[4:] for line in runbooks.splitlines() if line.startswith("### ")] == alerts
    assert "&lt;pod&gt;" in runbooks  # shown as text, not swallowed as an HTML tag
