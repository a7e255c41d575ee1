"""The OpenAPI document and the request validators, built from the route table."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from jsonschema import Draft202012Validator
from multidict import MultiDict

from sfu.api import jsonbody
from sfu.api.errors import CODES, ApiError
from sfu.api.openapi import RequestValidators, build_document, error_statuses
from sfu.api.routes import ROUTES, ApiCore, Route
from sfu.api.schemas import MAX_ROW_ID, PREFIX
from sfu.api.table import Route as TableRoute
from sfu.api.usage import UsageApi
from sfu.config import ApiConfig
from signaling.messages import load_schema

DOC = build_document(ROUTES, version="0.1.0")
VALIDATORS = RequestValidators(DOC, ROUTES)
BY_ID = {r.operation_id: r for r in ROUTES}


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def test_every_route_is_documented_once_with_its_statuses() -> None:
    ops = [(path, method, op) for path, item in DOC["paths"].items()
           for method, op in item.items()]
    assert len(ops) == len(ROUTES)
    assert len({op["operationId"] for _, _, op in ops}) == len(ROUTES)
    for path, method, op in ops:
        route = BY_ID[op["operationId"]]
        assert (path, method.upper()) == (route.path, route.method)
        assert set(op["responses"]) == {str(route.status), *map(str, error_statuses(route))}
        assert [(p["name"], p["in"]) for p in op.get("parameters", [])] == \
            [(p.name, "path") for p in route.path_params] + \
            [(p.name, "query") for p in route.query]
        if route.handler is not None:
            assert route.store_handler is None
            assert hasattr(ApiCore, route.handler.__name__)
        else:
            assert route.store_handler is not None
            assert hasattr(UsageApi, route.store_handler.__name__)
            assert "503" in op["responses"]


def test_document_is_openapi_3_1_and_its_refs_resolve() -> None:
    assert DOC["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(DOC).validate()  # against the OpenAPI 3.1 meta-schema
    schemas = DOC["components"]["schemas"]
    for ref in refs(DOC):
        assert ref.startswith(PREFIX) and ref.removeprefix(PREFIX) in schemas, ref
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    json.dumps(DOC)  # serialisable as is


def test_shared_objects_are_the_signaling_contracts() -> None:
    common = load_schema("common")["$defs"]
    schemas = DOC["components"]["schemas"]
    for name in ("ParticipantInfo", "TrackInfo", "Permission", "PermissionUpdate",
                 "room_name", "identity", "metadata", "payload"):
        text = json.dumps(common[name]).replace("common.json#/$defs/", PREFIX)
        assert json.loads(text) == schemas[name], name


def test_error_codes_are_documented() -> None:
    enum = DOC["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    assert enum == {"enum": list(CODES)}


def test_responses_name_their_headers() -> None:
    create = DOC["paths"]["/api/rooms"]["post"]["responses"]
    assert create["201"]["headers"]["Location"]["required"] is True
    assert "Retry-After" in create["429"]["headers"]
    assert "WWW-Authenticate" in create["401"]["headers"]
    assert create["201"]["links"]["getRoom"] == {
        "operationId": "getRoom", "parameters": {"room": "$response.body#/name"}}
    public = DOC["paths"]["/api/openapi.json"]["get"]
    assert public["security"] == [] and "401" not in public["responses"]


# -- request validation ----------------------------------------------------------------------------

def body_error(op: str, body: Any) -> str:
    with pytest.raises(ApiError) as e:
        VALIDATORS.body(BY_ID[op], body)
    assert (e.value.status, e.value.code) == (422, "invalid_request")
    return e.value.message


@pytest.mark.parametrize(("op", "body", "message"), [
    ("createRoom", {"name": "a b"}, "body.name: 'a b' does not match"),
    ("createRoom", {"name": "trailing-newline\n"}, "body.name: 'trailing-newline\\n' does not"),
    ("createRoom", {"name": "r" * 129}, "body.name: "),
    ("createRoom", {"type": "party"}, "body.type: 'party' is not one of ['conference', 'webinar']"),
    ("createRoom", {"max_participants": -1}, "body.max_participants: -1 is less than"),
    ("createRoom", {"max_participants": 100001}, "body.max_participants: 100001 is greater"),
    ("createRoom", {"empty_timeout_s": 9.9}, "body.empty_timeout_s: 9.9 is less than"),
    ("createRoom", {"start_time": -1}, "body.start_time: -1 is less than"),
    ("createRoom", {"waiting_room": "yes"}, "body.waiting_room: 'yes' is not of type 'boolean'"),
    ("createRoom", {"metadata": "m" * 65537}, "body.metadata: 'mmmm"),
    ("createRoom", [], "body: [] is not of type 'object'"),
    ("updateRoom", {}, "body: 'metadata' is a required property"),
    ("updateParticipant", {}, "body: {} should be non-empty"),
    ("updateParticipant", {"permission": {"can_fly": True}},
     "body.permission: Additional properties are not allowed ('can_fly'"),
    ("updateParticipant", {"permission": {"can_publish_sources": ["radio"]}},
     "body.permission.can_publish_sources[0]: 'radio' is not one of"),
    ("muteTrack", {"muted": 1}, "body.muted: 1 is not of type 'boolean'"),
    ("sendData", {"payload": "not base64!"}, "body.payload: 'not base64!' does not match"),
    ("sendData", {"payload": "aGk=", "kind": "bulk"}, "body.kind: 'bulk' is not one of"),
    ("createToken", {"room": "r"}, "body: 'identity' is a required property"),
    ("createToken", {"room": "r", "identity": "a", "role": "admin"}, "body.role: 'admin' is not"),
    ("createToken", {"room": "r", "identity": "a", "ttl_s": 604801}, "body.ttl_s: 604801 is"),
])
def test_body_validation(op: str, body: Any, message: str) -> None:
    assert body_error(op, body).startswith(message)


def test_long_values_are_shortened_in_messages() -> None:
    message = body_error("createRoom", {"metadata": "m" * 65537})
    assert len(message) < 200 and "… (" not in message


@pytest.mark.parametrize(("op", "body"), [
    ("createRoom", {}),
    ("createRoom", {"name": "a.B-9_z", "type": "webinar", "max_participants": 0,
                    "empty_timeout_s": 86400, "waiting_room": True, "auto_record": False,
                    "metadata": "", "start_time": 0}),
    ("updateParticipant", {"permission": {}}),
    ("sendData", {"payload": "", "destination_identities": []}),
    ("createToken", {"room": "r", "identity": "\u00e9\u0000 x", "ttl_s": 60}),
])
def test_body_validation_accepts(op: str, body: Any) -> None:
    assert VALIDATORS.body(BY_ID[op], body) == body


def test_path_validation_and_no_query() -> None:
    route = BY_ID["muteTrack"]
    ok = {"room": "r", "identity": "any thing/\u00e9", "track_sid": "TR_x"}
    assert VALIDATORS.path(route, ok) == ok
    with pytest.raises(ApiError) as e:
        VALIDATORS.path(route, {**ok, "room": "a b"})
    assert e.value.message.startswith("path.room: 'a b' does not match")
    with pytest.raises(ApiError) as e:
        VALIDATORS.path(route, {**ok, "track_sid": "x" * 65})
    assert e.value.message.startswith("path.track_sid: ")
    assert VALIDATORS.query(route, MultiDict()) == {}
    with pytest.raises(ApiError) as e:
        VALIDATORS.query(route, MultiDict([("room", "r")]))
    assert (e.value.status, e.value.message) == (422, "query.room: unknown query parameter")
    with pytest.raises(ApiError) as e:
        VALIDATORS.query(route, MultiDict([("x" * 100, "r")]))
    assert e.value.message.startswith("query.'xxxx") and len(e.value.message) < 120


@pytest.mark.parametrize(("op", "query", "expected"), [
    ("listSessions", [], {}),
    ("listSessions", [("room_id", "RM_x1"), ("from", "0"), ("to", "1767225600.25"),
                      ("limit", "10000"), ("cursor", "0")],
     {"room_id": "RM_x1", "from": 0, "to": 1767225600.25, "limit": 10000, "cursor": 0}),
    ("listSessions", [("limit", "1.0"), ("cursor", str(MAX_ROW_ID))],
     {"limit": 1, "cursor": MAX_ROW_ID}),
    ("getUsageSummary", [("from", "2026-11-23T18:00:00Z"), ("to", "2026-11-23t19:00:00.5+01:00")],
     {"from": "2026-11-23T18:00:00Z", "to": "2026-11-23t19:00:00.5+01:00"}),
    ("exportSessions", [("to", "1e3")], {"to": 1000.0}),
    ("listFailedWebhooks", [("room_id", "sales"), ("limit", "1")],
     {"room_id": "sales", "limit": 1}),
])
def test_query_validation_accepts_and_types(op: str, query: list[tuple[str, str]],
                                             expected: dict[str, Any]) -> None:
    got = VALIDATORS.query(BY_ID[op], MultiDict(query))
    assert got == expected
    assert all(type(got[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize(("op", "query", "status", "message"), [
    ("listSessions", [("limit", "0")], 422, "query.limit: 0 is less than the minimum of 1"),
    ("listSessions", [("limit", "10001")], 422, "query.limit: 10001 is greater than"),
    ("listSessions", [("limit", "ten")], 422, "query.limit: 'ten' is not of type 'integer'"),
    ("listSessions", [("limit", "1.5")], 422, "query.limit: 1.5 is not of type 'integer'"),
    ("listSessions", [("cursor", "-1")], 422, "query.cursor: -1 is less than the minimum"),
    ("listSessions", [("cursor", str(MAX_ROW_ID + 1))], 422, "query.cursor: 92233720368547"),
    ("listSessions", [("limit", "1"), ("limit", "2")], 400,
     "query.limit: given 2 times (give it once)"),
    ("listSessions", [("room_id", "a b")], 422, "query.room_id: 'a b' does not match"),
    ("listSessions", [("room_id", "")], 422, "query.room_id: '' should be non-empty"),
    ("listSessions", [("from", "-1")], 422, "query.from: -1 is less than the minimum of 0"),
    ("listSessions", [("from", "1e400")], 422, "query.from: inf is greater than the maximum"),
    ("listSessions", [("from", "yesterday")], 422,
     "query.from: 'yesterday' is not a 'date-time' (expected unix seconds or an RFC 3339"),
    ("listSessions", [("to", "2026-02-30T00:00:00Z")], 422,
     "query.to: '2026-02-30T00:00:00Z' is not a 'date-time' (day is out of range for month)"),
    ("listSessions", [("to", "2026-11-23T18:00:00")], 422,
     "query.to: '2026-11-23T18:00:00' is not a 'date-time'"),
    ("getUsageSummary", [("limit", "1")], 422, "query.limit: unknown query parameter"),
    ("replayFailedWebhooks", [("room_id", "r")], 422, "query.room_id: unknown query parameter"),
])
def test_query_validation_refuses(op: str, query: list[tuple[str, str]], status: int,
                                  message: str) -> None:
    with pytest.raises(ApiError) as e:
        VALIDATORS.query(BY_ID[op], MultiDict(query))
    assert e.value.status == status
    assert e.value.code == ("malformed_request" if status == 400 else "invalid_request")
    assert e.value.message.startswith(message), e.value.message


def test_query_parameters_are_documented_with_their_schemas() -> None:
    op = DOC["paths"]["/api/usage/sessions"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert list(params) == ["room_id", "from", "to", "limit", "cursor"]
    assert all(p["in"] == "query" and p["required"] is False for p in params.values())
    assert params["from"]["schema"] == {"$ref": PREFIX + "time"}
    limit = DOC["components"]["schemas"]["page_limit"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 10000, 1000)
    export = DOC["paths"]["/api/usage/sessions.jsonl"]["get"]["responses"]["200"]
    assert list(export["content"]) == ["application/jsonl"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "422", "429", "503"}


def test_a_route_has_exactly_one_handler() -> None:
    with pytest.raises(ValueError, match="exactly one of handler, store_handler"):
        TableRoute(method="GET", path="/api/x", operation_id="x", summary="", description="",
                   tag="meta")


def test_validators_follow_the_document() -> None:
    """The validators read the schemas from the document they are given (no second copy)."""
    doc = build_document(ROUTES, version="0")
    doc["components"]["schemas"]["MuteTrack"]["required"] = []
    relaxed = RequestValidators(doc, ROUTES)
    assert relaxed.body(BY_ID["muteTrack"], {}) == {}
    with pytest.raises(ApiError):
        VALIDATORS.body(BY_ID["muteTrack"], {})


# -- bodies ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "message"), [
    (b"\xff", "the body is not UTF-8"),
    (b"{", "invalid JSON: Expecting property name"),
    (b'{"a": 1, "a": 2}', "invalid JSON: duplicate key 'a'"),
    (b'{"a": NaN}', "invalid JSON: NaN is not JSON"),
    (b'{"a": -Infinity}', "invalid JSON: -Infinity is not JSON"),
    (b'{"a": 1e400}', "invalid JSON: number 1e400 is out of range"),
    (b'{"a": "\\udc00"}', "a string contains a lone UTF-16 surrogate"),
    (b'{"\\ud800": 1}', "a string contains a lone UTF-16 surrogate"),
    (b"[" * 100000 + b"]" * 100000, "invalid JSON: nested too deeply"),
])
def test_malformed_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(ApiError) as e:
        jsonbody.decode(raw)
    assert (e.value.status, e.value.code) == (400, "malformed_request")
    assert e.value.message.startswith(message)


def test_well_formed_bodies() -> None:
    assert jsonbody.decode(b'{"a": "\\ud83d\\ude00", "b": [1, 2.5, null]}') == \
        {"a": "\U0001f600", "b": [1, 2.5, None]}


@pytest.mark.parametrize(("ctype", "charset", "ok"), [
    ("application/json", None, True), ("application/json", "UTF-8", True),
    ("application/merge-patch+json", None, True), ("text/plain", None, False),
    ("application/x-www-form-urlencoded", None, False), ("application/json", "latin-1", False),
    ("application/octet-stream", None, False),
])
def test_media_types(ctype: str, charset: str | None, ok: bool) -> None:
    if ok:
        jsonbody.check_media_type(ctype, charset)
    else:
        with pytest.raises(ApiError) as e:
            jsonbody.check_media_type(ctype, charset)
        assert (e.value.status, e.value.code) == (415, "unsupported_media_type")


def _largest_body(route: Route) -> dict[str, Any]:
    """The largest body the route's schema allows, written with 12-byte JSON escapes."""
    astral = "\U0001f600"  # one character, "\\ud83d\\ude00" in ASCII JSON
    longest = {
        "createRoom": {"name": "r" * 128, "type": "conference", "max_participants": 100000,
                       "empty_timeout_s": 86399.123456789, "waiting_room": False,
                       "auto_record": False, "metadata": astral * 65536,
                       "start_time": 253402300798.123},
        "updateRoom": {"metadata": astral * 65536},
        "updateParticipant": {"name": astral * 256, "metadata": astral * 65536,
                              "permission": {"can_subscribe": False, "can_publish": False,
                                             "can_publish_data": False,
                                             "can_publish_sources": ["camera", "microphone",
                                                                     "screen_share",
                                                                     "screen_share_audio"],
                                             "can_update_metadata": False,
                                             "hidden": False}},
        "muteTrack": {"muted": False},
        "replayFailedWebhooks": {"ids": [MAX_ROW_ID] * 10000, "room_id": "r" * 128},
        "sendData": {"payload": "A" * 87384, "kind": "reliable", "topic": astral * 256,
                     "destination_identities": [astral * 256] * 1024},
        "createToken": {"room": "r" * 128, "identity": astral * 256, "role": "participant",
                        "name": astral * 256, "metadata": astral * 65536,
                        "ttl_s": 604799.123456789},
    }
    return longest[route.operation_id]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.body], ids=lambda r: r.operation_id)
def test_default_size_limit_fits_every_valid_request(route: Route) -> None:
    body = _largest_body(route)
    assert VALIDATORS.body(route, body) == body
    size = len(json.dumps(body).encode())  # Python's default: ASCII with \\u escapes
    assert size <= ApiConfig().max_request_bytes, (route.operation_id, size)
