"""Hypothesis strategies guided by the commands' JSON Schemas: mostly-valid documents, then
mutated (a field dropped, retyped or swapped for junk) so the decoder sees near misses."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from contracts.commands import COMMAND_TYPES

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
COMMAND_SCHEMAS = {
    name: json.loads((SCHEMAS / f"{name}.json").read_text()) for name in sorted(COMMAND_TYPES)
}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that usually satisfy `schema` (enough of JSON Schema for the contracts)."""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(
            min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 60)
        )
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e9), schema.get("maximum", 1e9), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs), max_size=3)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in properties.items() if k in required},
            optional={k: from_schema(v, defs) for k, v in properties.items() if k not in required},
        )
    return JSON


@st.composite
def command_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A command document from a schema, then zero to two mutations."""
    name = draw(st.sampled_from(sorted(COMMAND_SCHEMAS)))
    schema = COMMAND_SCHEMAS[name]
    document: dict[str, Any] = draw(from_schema(schema, schema.get("$defs", {})))
    for _ in range(draw(st.integers(0, 2))):
        mutation = draw(st.sampled_from(["drop", "junk", "extra", "type"]))
        keys = sorted(document)
        if mutation == "drop" and keys:
            document.pop(draw(st.sampled_from(keys)))
        elif mutation == "junk" and keys:
            document[draw(st.sampled_from(keys))] = draw(JSON)
        elif mutation == "extra":
            document[draw(st.text(max_size=10))] = draw(JSON)
        else:
            document["type"] = draw(st.sampled_from([*COMMAND_SCHEMAS, "", "session.nope"]))
    return document
