"""Markdown tables of the commands and events, generated from their JSON Schemas for the docs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contracts.commands import COMMAND_MODELS, CommandBase
from contracts.events import EVENT_MODELS, EventBase

MessageModel = type[CommandBase] | type[EventBase]


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def describe(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short human description of a JSON Schema property: `string 1..64`, `high|low`, ..."""
    if "$ref" in prop:
        target = defs[_ref_name(prop["$ref"])]
        if "enum" in target:
            return _one_of(target["enum"])
        fields = ", ".join(
            f"{name}: {describe(sub, defs)}" for name, sub in target.get("properties", {}).items()
        )
        return f"{{{fields}}}"
    if "anyOf" in prop:
        options = [describe(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(options)
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return _one_of(prop["enum"])
    kind = str(prop.get("type", "any"))
    if kind == "array":
        return f"list of {describe(prop.get('items', {}), defs)}"
    if prop.get("format") == "date-time":
        return "ISO-8601 date-time with offset"
    bounds = _bounds(prop)
    if "pattern" in prop:
        bounds = f"`{prop['pattern']}`"
    return f"{kind} {bounds}".strip()


def _one_of(values: Sequence[object]) -> str:
    # Not "a|b": a pipe would split the Markdown table cell.
    return " / ".join(f"`{v}`" for v in values)


def _bounds(prop: dict[str, Any]) -> str:
    if "minLength" in prop or "maxLength" in prop:
        low, high, unit = prop.get("minLength", 0), prop.get("maxLength"), " chars"
    else:
        low, high, unit = prop.get("minimum"), prop.get("maximum"), ""
    if "exclusiveMinimum" in prop:
        return f"> {prop['exclusiveMinimum']}"
    if high is None:
        if unit and low == 1:
            return "(non-empty)"
        return "" if not low else f">= {low}{unit}"
    return f"<= {high}{unit}" if not low else f"{low}..{high}{unit}"


def _table(models: Sequence[MessageModel], common: set[str]) -> list[str]:
    lines = ["| type | field | value | required | notes |", "|---|---|---|---|---|"]
    for model in models:
        schema = model.model_json_schema()
        defs = schema.get("$defs", {})
        required = set(schema.get("required", []))
        summary = (model.__doc__ or "").strip().splitlines()[0]
        lines.append(f"| `{schema['properties']['type']['const']}` | | | | {summary} |")
        for name, prop in schema["properties"].items():
            if name in common or name == "type":
                continue
            value = describe(prop, defs)
            if prop.get("default") is not None:
                value += f" (default {json.dumps(prop['default'])})"
            mark = "yes" if name in required else ""
            lines.append(f"| | `{name}` | {value} | {mark} | {prop.get('description', '')} |")
    return lines


def _common_table(model: MessageModel, skip: set[str]) -> list[str]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    lines = ["| field | value | notes |", "|---|---|---|"]
    for name, prop in schema["properties"].items():
        if name not in skip:
            lines.append(f"| `{name}` | {describe(prop, defs)} | {prop.get('description', '')} |")
    return lines


def markdown_tables() -> str:
    """Common fields, then one row per field of every command and event."""
    command_common = set(CommandBase.model_fields) - {"type"}
    event_common = set(EventBase.model_fields) - {"type"}
    sections = [
        "#### Fields common to every command",
        *_common_table(CommandBase, {"type"}),
        "",
        "#### Commands",
        *_table(COMMAND_MODELS, command_common),
        "",
        "#### Fields common to every event",
        *_common_table(EventBase, {"type"}),
        "",
        "`session_id` is required on every `session.*` and `speech.*` event.",
        "",
        "#### Events",
        *_table(EVENT_MODELS, event_common),
        "",
    ]
    return "\n".join(sections)
