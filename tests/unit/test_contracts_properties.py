"""Property-based tests: messages generated from the models' own fields and constraints."""

from __future__ import annotations

import contextlib
import json
import types
from datetime import UTC, timedelta, timezone
from enum import Enum
from inspect import isclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, AwareDatetime, BaseModel, StringConstraints, ValidationError

from contracts import (
    COMMAND_TYPES,
    EVENT_TYPES,
    DecodeError,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
)
from contracts.commands import CommandBase
from contracts.events import EventBase

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
TIMEZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    """Collect the constraints pydantic keeps as metadata into one dict."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, StringConstraints):
            found |= {
                k: v
                for k, v in (
                    ("min_len", item.min_length),
                    ("max_len", item.max_length),
                    ("pattern", item.pattern),
                )
                if v is not None
            }
        elif isinstance(item, annotated_types.MinLen):
            found["min_len"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            found["max_len"] = item.max_length
        elif isinstance(item, annotated_types.Ge):
            found["ge"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            found["gt"] = item.gt
        elif isinstance(item, annotated_types.Le):
            found["le"] = item.le
    return found


def _validators(metadata: list[Any]) -> list[Any]:
    return [item.func for item in metadata if isinstance(item, AfterValidator)]


def _passes(validators: list[Any], value: Any) -> bool:
    try:
        for validate in validators:
            validate(value)
    except ValueError:
        return False
    return True


def strategy_for(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """A strategy for one annotated field type, honouring its constraints."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return strategy_for(base, [*metadata, *extra])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        strategy = st.one_of(*(strategy_for(a, metadata) for a in options))
        return st.none() | strategy if len(options) < len(get_args(annotation)) else strategy
    if origin is list:
        (item,) = get_args(annotation)
        return st.lists(strategy_for(item, []), max_size=3)
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    bounds, validators = _bounds(metadata), _validators(metadata)
    if annotation is AwareDatetime:
        return st.datetimes(timezones=st.sampled_from(TIMEZONES))
    if isclass(annotation) and issubclass(annotation, Enum):
        return st.sampled_from(list(annotation))
    if isclass(annotation) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else None)
        return st.integers(min_value=low, max_value=bounds.get("le"))
    if annotation is float:
        return st.floats(
            min_value=bounds.get("ge"),
            max_value=bounds.get("le"),
            allow_nan=False,
            allow_infinity=False,
        )
    if annotation is str:
        if "pattern" in bounds:
            text = st.from_regex(bounds["pattern"], fullmatch=True)
        else:
            text = st.text(min_size=bounds.get("min_len", 0), max_size=bounds.get("max_len", 40))
        return text.filter(lambda value: _passes(validators, value)) if validators else text
    raise NotImplementedError(f"no strategy for {annotation!r}")


def _validate_or_none(model: type[BaseModel], fields: dict[str, Any]) -> BaseModel | None:
    # Cross-field or custom checks (e.g. "text not blank") are not in the metadata.
    try:
        return model.model_validate(fields)
    except ValidationError:
        return None


def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    fields = {
        name: strategy_for(info.annotation, list(info.metadata))
        for name, info in model.model_fields.items()
    }
    return (
        st.fixed_dictionaries(fields)
        .map(lambda values: _validate_or_none(model, values))
        .filter(lambda built: built is not None)
    )


def _schema(type_: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{type_}.json").read_text())
    return loaded


@pytest.mark.parametrize("type_", sorted(COMMAND_TYPES))
def test_generated_commands_round_trip_and_match_their_schema(type_: str) -> None:
    validator = jsonschema.Draft202012Validator(_schema(type_))

    @PROPERTY_SETTINGS
    @given(model_strategy(COMMAND_TYPES[type_]))
    def check(command: CommandBase) -> None:
        envelope = encode_command(command)
        assert decode_command(envelope.body, message_type=envelope.properties["type"]) == command
        validator.validate(json.loads(envelope.body))

    check()


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_generated_events_round_trip_and_match_their_schema(type_: str) -> None:
    validator = jsonschema.Draft202012Validator(_schema(type_))

    @PROPERTY_SETTINGS
    @given(model_strategy(EVENT_TYPES[type_]))
    def check(event: EventBase) -> None:
        envelope = encode_event(event)
        assert decode_event(envelope.body, message_type=event.type) == event
        validator.validate(json.loads(envelope.body))

    check()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_decode_error(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_command(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
FIELD_NAMES = sorted({name for m in COMMAND_TYPES.values() for name in m.model_fields})


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*COMMAND_TYPES, "bogus", None]),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=6),
    st.sampled_from([None, "session.stop", "session.speak"]),
)
def test_random_json_commands_decode_or_raise_decode_error(
    type_: str | None, fields: dict[str, Any], message_type: str | None
) -> None:
    body = json.dumps({**fields, "type": type_}).encode()
    outcome: Any
    try:
        outcome = decode_command(body, message_type=message_type)
    except DecodeError as error:
        outcome = error
    if isinstance(outcome, DecodeError):
        assert outcome.message
        assert str(outcome).startswith(f"{outcome.reason}: ")
    else:
        assert outcome.type == type_
