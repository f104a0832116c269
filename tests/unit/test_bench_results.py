"""bench/RESULTS.md keeps the latest run of each benchmark: a run replaces its own section."""

from __future__ import annotations

from pathlib import Path

from bench.results import HEADER, record_section


def test_a_run_replaces_its_own_section_and_keeps_the_others(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    record_section("speak", "## Speak, run 1\n\nfigures 1\n", results)
    record_section("keepalive_scale", "## Keep-alive scale, run 1\n\nheld 1\n", results)
    record_section("speak", "## Speak, run 2\n\nfigures 2\n", results)
    text = results.read_text()
    assert text.startswith(HEADER)
    assert "run 1\n\nfigures 1" not in text
    assert text.count("<!-- bench: speak -->") == 1
    assert text.index("## Speak, run 2") < text.index("## Keep-alive scale, run 1")
    record_section("keepalive_scale", "## Keep-alive scale, run 2\n\nheld 2\n", results)
    assert results.read_text() == (
        f"{HEADER}\n"
        "<!-- bench: speak -->\n## Speak, run 2\n\nfigures 2\n\n"
        "<!-- bench: keepalive_scale -->\n## Keep-alive scale, run 2\n\nheld 2\n"
    )


def test_the_checked_in_results_hold_one_section_per_benchmark() -> None:
    text = Path(__file__).parents[2].joinpath("bench", "RESULTS.md").read_text()
    marks = [line for line in text.splitlines() if line.startswith("<!-- bench: ")]
    assert sorted(marks) == [
        f"<!-- bench: {name} -->"
        for name in ("keepalive_scale", "lite_latency", "liveavatar_scale", "speak")
    ]
    assert len(text.splitlines()) <= 300
