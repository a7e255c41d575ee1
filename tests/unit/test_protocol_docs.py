"""The protocol's schemas, its document and the message validator agree with each other."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from signaling import errors
from signaling.errors import ProtocolError
from signaling.messages import (
    CLIENT_TYPES,
    SERVER_TYPES,
    MessageError,
    load_schema,
    parse_client_message,
    schema_names,
    validate_server_message,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
SCHEMA_DIR = ROOT / "signaling" / "schemas"
BASE_URI = "https://sfu.invalid/schemas/"
MESSAGE_PARTS = {"Client → server messages": "client", "Server → client messages": "server"}

# The two tables of the protocol outline.
OUTLINE_CLIENT = {
    "offer", "answer", "trickle", "add_track", "mute", "subscription", "track_settings",
    "update_metadata", "leave", "ping", "list_participants", "remove_participant",
    "mute_published_track", "update_participant", "send_data", "create_room", "list_rooms",
    "delete_room",
}
OUTLINE_SERVER = {
    "join", "control_ready", "offer", "answer", "trickle", "participant_joined",
    "participant_left", "participant_updated", "track_published", "track_unpublished",
    "speakers_changed", "connection_quality", "stream_state", "subscribed_quality_update",
    "room_update", "token_refresh", "leave", "pong", "error", "ack", "participants_list",
    "rooms_list", "room_created", "data",
}


# -- reading the document ----------------------------------------------------------------------

class Section:
    def __init__(self, heading: str, part: str | None, line: int) -> None:
        self.heading = heading
        self.part = part  # the enclosing "## ..." heading
        self.line = line
        self.examples: list[tuple[int, str]] = []  # (line, text) of each ```json block


def read_doc() -> tuple[list[Section], list[tuple[int, str]]]:
    """Level-3 sections with their ```json blocks, and the ```json blocks outside them."""
    sections: list[Section] = []
    loose: list[tuple[int, str]] = []
    current: Section | None = None
    part: str | None = None
    fence: tuple[int, str, list[str]] | None = None  # (line, info string, body)
    for number, line in enumerate(DOC.read_text("utf-8").splitlines(), start=1):
        if fence is not None:
            if line.strip() == "```":
                start, info, body = fence
                if info == "json":
                    block = (start, "\n".join(body))
                    (current.examples if current is not None else loose).append(block)
                fence = None
            else:
                fence[2].append(line)
            continue
        if line.startswith("```"):
            fence = (number, line[3:].strip(), [])
            continue
        heading = re.match(r"(#{1,6}) +(.*?) *$", line)
        if heading:
            level, text = len(heading.group(1)), heading.group(2)
            if level <= 2:
                part = text
            current = Section(text, part, number) if level == 3 else None
            if current is not None:
                sections.append(current)
    assert fence is None, f"unclosed code fence opened on line {fence[0]}"
    return sections, loose


SECTIONS, LOOSE_BLOCKS = read_doc()
MESSAGE_SECTIONS = [s for s in SECTIONS
                    if s.part in MESSAGE_PARTS or re.fullmatch(r"(client|server)\.\S+", s.heading)]
EXAMPLES = [pytest.param(s.heading, text, id=f"{s.heading}@{line}")
            for s in MESSAGE_SECTIONS for line, text in s.examples]


def validator(name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resources(
        (f"{BASE_URI}{path.name}", Resource.from_contents(json.loads(path.read_text("utf-8"))))
        for path in SCHEMA_DIR.glob("*.json")
    )
    return Draft202012Validator(load_schema(name), registry=registry)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


# -- the schemas -------------------------------------------------------------------------------

def test_message_types_are_the_outlines() -> None:
    assert CLIENT_TYPES == OUTLINE_CLIENT
    assert SERVER_TYPES == OUTLINE_SERVER
    assert schema_names() == sorted([f"client.{t}" for t in OUTLINE_CLIENT]
                                    + [f"server.{t}" for t in OUTLINE_SERVER])


@pytest.mark.parametrize("name", [*schema_names(), "common"])
def test_schema_is_well_formed(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{BASE_URI}{name}.json"
    for path, node in walk(schema):
        if isinstance(node, dict) and (node.get("type") == "object" or "properties" in node):
            assert node.get("additionalProperties") is False, f"{name}{path}"
    if name != "common":
        direction, msg_type = name.split(".")
        assert schema["properties"]["type"] == {"const": msg_type}
        assert "type" in schema["required"]
        assert schema["properties"]["id"] == {"$ref": "common.json#/$defs/request_id"}


@pytest.mark.parametrize("name", [*schema_names(), "common"])
def test_every_ref_resolves(name: str) -> None:
    resolver = validator(name)._resolver
    refs = [node["$ref"] for _, node in walk(load_schema(name))
            if isinstance(node, dict) and "$ref" in node]
    for ref in refs:
        assert resolver.lookup(ref).contents, ref


def test_error_code_enum_matches_errors_module() -> None:
    codes = {value for key, value in vars(errors).items()
             if key.isupper() and isinstance(value, str)}
    assert set(load_schema("server.error")["properties"]["code"]["enum"]) == codes


def test_ack_names_a_client_request() -> None:
    assert set(load_schema("server.ack")["properties"]["request"]["enum"]) == CLIENT_TYPES


def test_load_schema_returns_a_copy() -> None:
    load_schema("client.offer")["required"].append("mutated")
    assert "mutated" not in load_schema("client.offer")["required"]
    with pytest.raises(KeyError):
        load_schema("client.nope")


# -- the document ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "text"), EXAMPLES)
def test_doc_example_validates(name: str, text: str) -> None:
    msg = json.loads(text)
    errs = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(msg)]
    assert not errs
    if name.startswith("client."):
        assert parse_client_message(text, 65536) == msg
    else:
        validate_server_message(msg)


def test_every_schema_has_a_section_with_an_example() -> None:
    documented = {s.heading for s in MESSAGE_SECTIONS if s.examples}
    assert sorted(set(schema_names()) - documented) == []


def test_every_section_names_a_schema_in_its_part() -> None:
    headings = [s.heading for s in MESSAGE_SECTIONS]
    assert len(headings) == len(set(headings)), "a message is documented twice"
    for s in MESSAGE_SECTIONS:
        assert s.heading in schema_names(), f"line {s.line}: no schema {s.heading!r}"
        assert s.part in MESSAGE_PARTS, f"line {s.line}: {s.heading} outside the message parts"
        assert s.heading.startswith(MESSAGE_PARTS[s.part] + "."), f"line {s.line}"


def test_doc_has_the_message_parts_and_tables() -> None:
    parts = {s.part for s in SECTIONS}
    assert set(MESSAGE_PARTS) <= parts
    text = DOC.read_text("utf-8")
    for code in load_schema("server.error")["properties"]["code"]["enum"]:
        assert f"| `{code}` |" in text, code
    for close in (1000, 1001, 1009, 4001, 4003, 4008, 4010):
        assert f"| {close} |" in text, close


@pytest.mark.parametrize("text", [t for _, t in LOOSE_BLOCKS])
def test_other_json_blocks_parse(text: str) -> None:
    json.loads(text)


# -- parse_client_message ----------------------------------------------------------------------

def refused(data: str | bytes, max_bytes: int = 65536) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(data, max_bytes)
    return info.value


def test_valid_message_is_returned() -> None:
    text = '{"type": "offer", "id": "o1", "target": "publisher", "sdp": "v=0\\r\\n"}'
    expected = {"type": "offer", "id": "o1", "target": "publisher", "sdp": "v=0\r\n"}
    assert parse_client_message(text, 65536) == expected
    assert parse_client_message(text.encode(), 65536) == expected


def test_size_limit_counts_utf8_bytes() -> None:
    text = json.dumps({"type": "leave", "reason": "é" * 60}, ensure_ascii=False)
    size = len(text.encode())
    assert parse_client_message(text, size)["reason"] == "é" * 60
    assert refused(text, size - 1).code == errors.MESSAGE_TOO_LARGE
    assert refused(text.encode(), size - 1).code == errors.MESSAGE_TOO_LARGE
    huge = '{"type": "offer", "target": "publisher", "sdp": "' + "a" * 70000 + '"}'
    err = refused(huge)
    assert err.code == errors.MESSAGE_TOO_LARGE and "65536" in err.message


@pytest.mark.parametrize("data", [
    "", "not json", '{"type": "ping"', b"\xff\xfe{}", "[1, 2]", '"ping"', "null", "42",
    '{"type": "ping", "type": "leave"}', '{"type": "ping", "timestamp_ms": NaN}',
    '{"type": "ping", "timestamp_ms": Infinity}', '{"type": "ping", "timestamp_ms": 1e999}',
    '{"type": "leave", "reason": "\\ud800"}', "[" * 50000 + "]" * 50000,
    '{"type": "ping", "id": ' + "9" * 5000 + "}",
])
def test_malformed(data: str | bytes) -> None:
    assert refused(data, 1 << 20).code == errors.MALFORMED_MESSAGE


def test_escaped_surrogate_pair_is_fine() -> None:
    assert parse_client_message('{"type": "leave", "reason": "\\ud83d\\ude00"}', 100) == {
        "type": "leave", "reason": "\U0001f600"}


@pytest.mark.parametrize(("data", "fragment"), [
    ("{}", "no type"),
    ('{"id": 1}', "no type"),
    ('{"type": 5}', "must be a string"),
    ('{"type": null}', "must be a string"),
    ('{"type": "join"}', "'join'"),
    ('{"type": "Offer", "target": "publisher", "sdp": "x"}', "'Offer'"),
])
def test_unknown_type(data: str, fragment: str) -> None:
    err = refused(data)
    assert err.code == errors.UNKNOWN_TYPE
    assert fragment in err.message


@pytest.mark.parametrize(("msg", "expected"), [
    ({"type": "offer", "target": "x", "sdp": "v=0"},
     "offer.target: 'x' is not one of ['publisher', 'subscriber']"),
    ({"type": "offer", "target": "publisher"}, "offer: 'sdp' is a required property"),
    ({"type": "offer", "target": "publisher", "sdp": "v=0", "extra": 1}, "'extra'"),
    ({"type": "offer", "target": "publisher", "sdp": ""}, "offer.sdp:"),
    ({"type": "ping", "id": ""}, "ping.id:"),
    ({"type": "ping", "id": "x" * 65}, "ping.id:"),
    ({"type": "ping", "id": -1}, "ping.id:"),
    ({"type": "ping", "id": 1.5}, "ping.id:"),
    ({"type": "ping", "id": True}, "ping.id:"),
    ({"type": "subscription", "track_sids": [], "subscribe": True}, "subscription.track_sids:"),
    ({"type": "subscription", "track_sids": ["TR_1", 7], "subscribe": True},
     "subscription.track_sids[1]:"),
    ({"type": "trickle", "target": "publisher", "candidate": {"candidate": "c", "sdp_mid": 5}},
     "trickle.candidate.sdp_mid:"),
    ({"type": "add_track", "cid": "c", "kind": "video", "source": "unknown"},
     "add_track.source:"),
    ({"type": "track_settings", "track_sids": ["TR_1"], "priority": 256},
     "track_settings.priority:"),
    ({"type": "update_metadata", "name": "n" * 257}, "update_metadata.name:"),
    ({"type": "update_participant", "identity": "bob", "permission": {"admin": True}},
     "update_participant.permission:"),
    ({"type": "create_room", "name": "bad name"}, "create_room.name:"),
    ({"type": "create_room", "name": "trailing-newline\n"}, "create_room.name:"),
    ({"type": "create_room", "name": "r" * 129}, "create_room.name:"),
    ({"type": "send_data", "payload": "not base64!"}, "send_data.payload:"),
    ({"type": "send_data", "payload": "QUJD\n"}, "send_data.payload:"),
])
def test_schema_violation_names_the_path(msg: dict[str, Any], expected: str) -> None:
    err = refused(json.dumps(msg))
    assert err.code == errors.INVALID_MESSAGE
    assert expected in err.message


@pytest.mark.parametrize(("data", "request_id"), [
    ('{"type": "launch_missiles", "id": 7}', 7),
    ('{"id": 0}', 0),
    ('{"type": "offer", "target": "sideways", "sdp": "v=0", "id": "x"}', "x"),
    ('{"type": "ping", "extra": 1}', None),
    ('{"type": "ping", "id": ""}', None),
    ('{"type": "ping", "id": -1}', None),
    ('{"type": "ping", "id": true}', None),
    ('{"type": "nope", "id": "\\ud800"}', None),
    ('[{"id": 1}]', None),
    ('{"id": 1', None),
])
def test_error_carries_the_valid_request_id(data: str, request_id: str | int | None) -> None:
    err = refused(data)
    assert isinstance(err, MessageError)
    assert err.request_id == request_id and type(err.request_id) is type(request_id)


def test_violation_message_stays_short() -> None:
    err = refused(json.dumps({"type": "update_metadata", "metadata": "m" * 65537}), 1 << 20)
    assert err.code == errors.INVALID_MESSAGE
    assert err.message.startswith("update_metadata.metadata: ")
    assert len(err.message) < 200


# -- validate_server_message -------------------------------------------------------------------

PONG = {"type": "pong", "id": 3, "timestamp_ms": 12.5, "server_time_ms": 1767225612351}


def test_server_message_on_schema_passes() -> None:
    validate_server_message(PONG)


@pytest.mark.parametrize(("msg", "fragment"), [
    ({**PONG, "extra": True}, "'extra'"),
    ({"type": "pong"}, "'server_time_ms' is a required property"),
    ({"type": "error", "code": "no_such_code", "message": "x"}, "error.code:"),
    ({"type": "leave", "reason": "bored", "can_reconnect": False}, "leave.reason:"),
    ({"type": "ack", "request": "join"}, "ack.request:"),
    ({"type": "participant_left", "participant_sid": "PA_1", "identity": "", "reason": "x"},
     "participant_left.identity:"),
    ({"type": "ping"}, "unknown server message type 'ping'"),
    ({"server_time_ms": 1}, "unknown server message type None"),
])
def test_server_message_off_schema_is_refused(msg: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        validate_server_message(msg)
    assert info.value.code == errors.INVALID_MESSAGE
    assert fragment in info.value.message
