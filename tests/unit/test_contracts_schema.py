"""The checked-in JSON Schemas and AsyncAPI document: drift, examples, AsyncAPI structure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from contracts import (
    COMMAND_TYPES,
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENT_TYPES,
    EVENTS_EXCHANGE,
    decode_command,
    decode_event,
)
from contracts.schema import PACKAGE_DIR, drifted_files, generated_files, main, write

SCHEMAS = PACKAGE_DIR / "schemas"
ALL_TYPES = sorted([*COMMAND_TYPES, *EVENT_TYPES])
KEY = re.compile(r"^[A-Za-z0-9_\-]+$")  # AsyncAPI component, channel and operation keys
RUNTIME_EXPRESSION = re.compile(r"^\$message\.(header|payload)#(/(([^/~])|(~[01]))*)*$")
AMQP_EXCHANGE_TYPES = {"topic", "direct", "fanout", "default", "headers"}


def load_schema(type_: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{type_}.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PACKAGE_DIR / "asyncapi.yaml").read_text())
    return loaded


# --- drift ----------------------------------------------------------------------------------


def test_checked_in_files_match_the_models() -> None:
    assert drifted_files() == [], "run `make schemas` (python -m contracts.schema write)"


def test_check_names_drifted_files_and_write_repairs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(write(tmp_path)) == len(generated_files()) == len(ALL_TYPES) + 1
    assert main(["check"], root=tmp_path) == 0

    (tmp_path / "schemas" / "session.speak.json").write_text("{}")
    (tmp_path / "schemas" / "session.renamed.json").write_text("{}")
    (tmp_path / "asyncapi.yaml").unlink()
    capsys.readouterr()
    assert main(["check"], root=tmp_path) == 1
    err = capsys.readouterr().err
    for path in ("asyncapi.yaml", "schemas/session.renamed.json", "schemas/session.speak.json"):
        assert f"contracts/{path}" in err
    assert "python -m contracts.schema write" in err

    assert main(["write"], root=tmp_path) == 0
    assert drifted_files(tmp_path) == []
    assert not (tmp_path / "schemas" / "session.renamed.json").exists()


def test_unknown_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "write|check|markdown" in capsys.readouterr().err


def test_markdown_tables_cover_every_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["markdown"]) == 0
    text = capsys.readouterr().out
    for type_ in ALL_TYPES:
        assert f"| `{type_}` |" in text
    voice = next(line for line in text.splitlines() if "| `voice` |" in line)
    assert "rate: number 0.5..1.5" in voice


# --- JSON Schemas ---------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_schema_is_valid_and_every_example_validates_and_decodes(type_: str) -> None:
    schema = load_schema(type_)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert schema["examples"], f"{type_} has no example"
    decode = decode_command if type_ in COMMAND_TYPES else decode_event
    for example in schema["examples"]:
        validator.validate(example)
        assert decode(json.dumps(example).encode()).type == type_
    assert schema["required"][0] == "type"
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("type_", "change"),
    [
        ("session.speak", {"session_id": "has.dot"}),
        ("session.speak", {"text": "x" * 2001}),
        ("session.speak", {"text": ""}),
        ("session.speak", {"unknown": 1}),
        ("session.speak", {"type": "session.stop"}),
        ("session.create", {"voice": {"rate": 2}}),
        ("session.create", {"quality": "ultra"}),
        ("session.stopped", {"reason": "bored"}),
        ("session.created", {"seq": 0}),
    ],
)
def test_schema_rejects_what_the_model_rejects(type_: str, change: dict[str, Any]) -> None:
    schema = load_schema(type_)
    instance = schema["examples"][0] | change
    assert not jsonschema.Draft202012Validator(schema).is_valid(instance)


def test_schema_requires_type() -> None:
    schema = load_schema("session.interrupt")
    instance = {k: v for k, v in schema["examples"][0].items() if k != "type"}
    assert not jsonschema.Draft202012Validator(schema).is_valid(instance)


def test_only_generated_schema_files_are_checked_in() -> None:
    assert sorted(p.stem for p in SCHEMAS.glob("*.json")) == ALL_TYPES


# --- AsyncAPI -------------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _deref(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _resolve(document, node["$ref"])
    return node


def _message_types(document: dict[str, Any], refs: list[dict[str, str]]) -> set[str]:
    return {_deref(document, ref)["name"] for ref in refs}


def test_asyncapi_version_info_and_server(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"]
    assert re.match(r"^\d+\.\d+\.\d+$", asyncapi["info"]["version"])
    assert asyncapi["defaultContentType"] == "application/json"
    server = asyncapi["servers"]["rabbitmq"]
    assert (server["protocol"], server["protocolVersion"]) == ("amqp", "0.9.1")


def test_asyncapi_every_reference_resolves(asyncapi: dict[str, Any]) -> None:
    refs = list(_refs(asyncapi))
    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            assert _resolve(asyncapi, ref) is not None, ref
        else:
            assert (PACKAGE_DIR / ref).is_file(), ref


def test_asyncapi_messages_match_the_schemas(asyncapi: dict[str, Any]) -> None:
    messages = asyncapi["components"]["messages"]
    assert sorted(m["name"] for m in messages.values()) == ALL_TYPES
    for key, message in messages.items():
        assert KEY.match(key)
        assert message["payload"] == {"$ref": f"./schemas/{message['name']}.json"}
        assert message["bindings"]["amqp"]["messageType"] == message["name"]
        assert RUNTIME_EXPRESSION.match(message["correlationId"]["location"])
        schema = load_schema(message["name"])
        validator = jsonschema.Draft202012Validator(schema)
        for example in message["examples"]:
            validator.validate(example["payload"])


def test_asyncapi_channels_describe_the_topology(asyncapi: dict[str, Any]) -> None:
    channels = asyncapi["channels"]
    assert all(KEY.match(key) for key in channels)
    addresses = {name: channel["address"] for name, channel in channels.items()}
    assert addresses == {
        "commands": COMMANDS_EXCHANGE,
        "commandPartition": "avatar.commands.p{partition}",
        "deadLetterExchange": DEAD_LETTER_EXCHANGE,
        "deadLetters": DEAD_LETTER_QUEUE,
        "events": EVENTS_EXCHANGE,
        "replies": None,
    }
    assert channels["commands"]["x-exchange-type"] == "x-consistent-hash"
    assert "partition" in channels["commandPartition"]["parameters"]
    assert channels["events"]["bindings"]["amqp"]["exchange"]["type"] == "topic"
    for channel in channels.values():
        amqp = channel.get("bindings", {}).get("amqp")
        if amqp is None:
            continue
        # The AMQP binding schema: exactly one of exchange/queue, a known exchange type.
        assert (amqp["is"] == "routingKey") == ("exchange" in amqp) != ("queue" in amqp)
        assert amqp.get("exchange", {}).get("type", "topic") in AMQP_EXCHANGE_TYPES


def test_asyncapi_operations(asyncapi: dict[str, Any]) -> None:
    operations = asyncapi["operations"]
    assert all(KEY.match(key) for key in operations)
    for operation in operations.values():
        assert operation["action"] in ("send", "receive")
        channel_ref = operation["channel"]["$ref"]
        # AsyncAPI 3: an operation's messages are a subset of its channel's messages.
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/")
    send = operations["sendCommand"]
    assert send["action"] == "send"
    assert send["channel"]["$ref"] == "#/channels/commands"
    assert _message_types(asyncapi, send["messages"]) == set(COMMAND_TYPES)
    assert send["bindings"]["amqp"]["deliveryMode"] == 2
    assert RUNTIME_EXPRESSION.match(send["reply"]["address"]["location"])
    assert send["reply"]["channel"]["$ref"] == "#/channels/replies"
    receive = operations["receiveEvents"]
    assert receive["action"] == "receive"
    assert _message_types(asyncapi, receive["messages"]) == set(EVENT_TYPES)
