"""The documentation's generated parts: the tables of contracts, settings, metrics and the CLI,
the alert runbooks and the latest benchmark figures.

Each table lives in a Markdown page between two marker comments,
`<!-- generated: NAME -->` and `<!-- end: NAME -->`, and is made from the code that defines it,
so the docs cannot drift from it: `make test` runs the check.

Usage: python -m docsgen {write|check}
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo

from contracts.docs import markdown_tables
from worker.cli.parser import build_parser
from worker.observability.metrics import Metrics
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parent
PAGES = ("README.md", "docs")
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RESULTS = ROOT / "bench" / "RESULTS.md"
_BLOCK = re.compile(
    r"(?P<open><!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end: (?P=name) -->)",
    re.DOTALL,
)
# Options every networked subcommand shares; their help shows this shell's AMQP_URL.
_SHARED_OPTIONS = {"help", "amqp_url", "connect_timeout"}


def _cell(text: str) -> str:
    """One table cell: whitespace collapsed, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    """Text from YAML as Markdown: whitespace collapsed, `<pod>` kept visible (not an HTML tag)."""
    return html.escape(" ".join(text.split()), quote=False)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None or value == frozenset():
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def variable(field: FieldInfo) -> str:
    """The environment variable a setting is read from: the first of its aliases."""
    alias = field.validation_alias
    return str(alias.choices[0] if isinstance(alias, AliasChoices) else alias)


def settings_table() -> str:
    """Every environment variable of the worker, from the pydantic settings model."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for field in WorkerSettings.model_fields.values():
        lines.append(
            f"| `{variable(field)}` | {_default(field)} | {_cell(field.description or '')} |"
        )
    return "\n".join(lines)


def metrics_table() -> str:
    """Every `heygen_worker_*` family, from the registry the worker exports."""
    registry = CollectorRegistry()
    Metrics(registry, version="docs")
    lines = ["| name | type | labels | meaning |", "|---|---|---|---|"]
    for family in registry.collect():
        if not family.name.startswith("heygen_worker_"):
            continue
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        name = family.name + suffix
        labels = sorted(
            {key for sample in family.samples for key in sample.labels} - {"le", "quantile"}
        )
        lines.append(
            f"| `{name}` | {family.type} | {', '.join(labels)} | {_cell(family.documentation)} |"
        )
    return "\n".join(lines)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _options(parser: argparse.ArgumentParser) -> str:
    flags = [
        f"`{action.option_strings[-1]}`" if action.option_strings else f"`{action.dest.upper()}`"
        for action in parser._actions
        if action.dest not in _SHARED_OPTIONS and not isinstance(action, argparse._SubParsersAction)
    ]
    return " ".join(flags)


def _cli_rows(prefix: str, parser: argparse.ArgumentParser) -> Iterator[str]:
    helps = _helps(parser)
    for name, sub in _subcommands(parser).items():
        command = f"{prefix} {name}"
        if _subcommands(sub):
            yield from _cli_rows(command, sub)
        else:
            yield f"| `{command}` | {_cell(helps.get(name, ''))} | {_options(sub)} |"


def cli_table() -> str:
    """Every `heygen-worker` subcommand with its help and options, from the argparse tree."""
    lines = ["| command | what it does | options |", "|---|---|---|"]
    lines.extend(_cli_rows("heygen-worker", build_parser()))
    return "\n".join(lines)


def alert_runbooks() -> str:
    """A section per alert of deploy/prometheus/alerts.yml: what it means, what to do."""
    rules = yaml.safe_load(ALERTS.read_text())
    sections: list[str] = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            notes: dict[str, Any] = rule["annotations"]
            steps = re.split(r"\s*(?=\b\d+\. )", _prose(notes["runbook"]))
            sections += [
                f"### {rule['alert']}",
                "",
                f"**{rule['labels']['severity']}**, after {rule.get('for', '0m')}: "
                f"{_prose(notes['summary'])}.",
                "",
                f"**What it means.** {_prose(notes['description'])}",
                "",
                "**What to do.**",
                "",
                *(step for step in steps if step),
                "",
            ]
    return "\n".join(sections).rstrip()


def benchmark_results() -> str:
    """The latest recorded run of each benchmark, from bench/RESULTS.md, a heading level down;
    the plots stay in bench/plots/ (the site does not serve files outside docs/)."""
    text = RESULTS.read_text()
    lines = text[text.index("<!-- bench: ") :].splitlines()
    kept = [
        f"#{line}" if line.startswith("## ") else line
        for line in lines
        if not line.startswith(("<!-- bench: ", "!["))
    ]
    return "\n".join(kept).strip()


GENERATORS: dict[str, Callable[[], str]] = {
    "contracts": lambda: markdown_tables().rstrip(),
    "settings": settings_table,
    "metrics": metrics_table,
    "cli": cli_table,
    "runbooks": alert_runbooks,
    "benchmarks": benchmark_results,
}


def _pages(root: Path) -> list[Path]:
    found: list[Path] = []
    for entry in PAGES:
        path = root / entry
        found.extend(sorted(path.rglob("*.md")) if path.is_dir() else [path])
    return [page for page in found if page.is_file()]


def render(text: str, tables: dict[str, str]) -> str:
    """`text` with the body of every marked block replaced by its table."""

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in tables:
            raise KeyError(f"no generator for the block {name!r}")
        return f"{match['open']}{tables[name]}\n{match['close']}"

    return _BLOCK.sub(fill, text)


def drifted(root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(pages whose generated blocks are out of date, generators no page uses)."""
    tables = {name: make() for name, make in GENERATORS.items()}
    stale: list[str] = []
    used: set[str] = set()
    for page in _pages(root):
        text = page.read_text(encoding="utf-8")
        used.update(match["name"] for match in _BLOCK.finditer(text))
        if render(text, tables) != text:
            stale.append(str(page.relative_to(root)))
    return stale, sorted(set(tables) - used)


def write(root: Path = ROOT) -> list[str]:
    """Regenerate every block in place; returns the pages that changed."""
    tables = {name: make() for name, make in GENERATORS.items()}
    changed = []
    for page in _pages(root):
        text = page.read_text(encoding="utf-8")
        new = render(text, tables)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(str(page.relative_to(root)))
    return changed


def main(argv: Sequence[str], root: Path = ROOT) -> int:
    command = argv[0] if argv else ""
    if command == "write":
        changed = write(root)
        print(f"docs: {len(changed)} page(s) regenerated", *changed, sep="\n  ")
        return 0
    if command == "check":
        stale, unused = drifted(root)
        for page in stale:
            print(f"docs: {page} is out of date: run `python -m docsgen write`", file=sys.stderr)
        for name in unused:
            print(f"docs: no page holds the generated block {name!r}", file=sys.stderr)
        if stale or unused:
            return 1
        print("docs: generated tables are up to date")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
