"""The REST API against real daemons, with a real HTTP client (aiohttp) over 127.0.0.1.

Every route is called with success and with each error status its OpenAPI entry documents
(the table is derived from the route table, so a new route or status cannot go untested);
every JSON answer is checked against the daemon's own OpenAPI document. Participants are real
signaling clients (and real aiortc peers for the mute test); ``schemathesis run --checks all``
fuzzes the live daemon from its ``/api/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import websockets
from aiortc.mediastreams import VideoStreamTrack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jsonschema import Draft202012Validator

from sfu.api.openapi import error_statuses
from sfu.api.routes import ROUTES, Route
from signaling.auth import TokenVerifier, VideoGrant, mint_token
from signaling.messages import validate_server_message
from tests.conftest import (
    API_KEY,
    API_SECRET,
    ROOT,
    Daemon,
    start_daemon,
    stop_daemon,
    write_config,
)
from tests.peers import AiortcParticipant, FrameRecorder

pytestmark = pytest.mark.timeout(90)

MAX_BODY = 65536
JOIN_BASE = "https://meet.example.com/app"
ORIGIN = "https://crm.example.com"
ADMIN = VideoGrant(room_admin=True, room_create=True, room_list=True, room_record=True)
FAST = {"rate_limit_per_s": 100000.0, "rate_limit_burst": 1000000}
JSONL = "application/jsonl"


def admin_token(grant: VideoGrant = ADMIN, *, identity: str = "backend", ttl_s: float = 3600,
                now: float | None = None, key: str = API_KEY, secret: str = API_SECRET) -> str:
    return mint_token(key, secret, identity=identity, now=time.time() if now is None else now,
                      ttl_s=ttl_s, grant=grant)


# -- daemons -----------------------------------------------------------------------------------

def start_edited(tmp: Path, sections: dict[str, dict[str, Any]],
                 edit: Callable[[str], str], timeout_s: float = 15) -> Daemon:
    """Like ``start_daemon``, with the config text passed through ``edit`` first."""
    path, ports = write_config(tmp, sections)
    path.write_text(edit(path.read_text()))
    log_path = tmp / "daemon.log"
    logf = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "sfu", "serve", "--config", str(path)],
                            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
    d = Daemon(proc, ports["http"], ports["metrics"], ports["udp"], path, log_path)
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, d.log()
        try:
            if d.get("/healthz")[0] == 200:
                return d
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"daemon did not start:\n{d.log()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("api"), {
        "api": {**FAST, "max_request_bytes": MAX_BODY, "join_base_url": JOIN_BASE},
        "room": {"auto_create": False}, "server": {"drain_timeout_s": 0.5}})
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def document(api_daemon: Daemon) -> dict[str, Any]:
    status, body = api_daemon.get("/api/openapi.json")
    assert status == 200
    doc: dict[str, Any] = json.loads(body)
    return doc


# -- HTTP helpers ------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


@dataclass
class Api:
    """An aiohttp client for one daemon that checks every answer against the OpenAPI document."""

    daemon: Daemon
    session: aiohttp.ClientSession
    doc: dict[str, Any] | None = None
    token: str = field(default_factory=admin_token)

    async def call(self, method: str, path: str, *, json_body: Any = None,
                   data: bytes | str | None = None, token: str | None = "default",
                   headers: dict[str, str] | None = None, op: str | None = None) -> Reply:
        hdrs = dict(headers or {})
        if token == "default":
            token = self.token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.daemon.http + path, data=data,
                                        headers=hdrs) as resp:
            raw = await resp.read()
            if resp.content_type == JSONL:  # a list of the lines' objects
                assert raw == b"" or raw.endswith(b"\n"), raw[-200:]
                body: Any = [json.loads(line) for line in raw.decode().splitlines()]
            else:
                body = json.loads(raw) if raw else None
            reply = Reply(resp.status, body, resp.headers)
        if self.doc is not None and op is not None:
            check_answer(self.doc, op, reply)
        if reply.status >= 400:
            assert set(reply.body) == {"error"}, reply.body
            assert set(reply.body["error"]) == {"code", "message"}, reply.body
        return reply


def operation(doc: dict[str, Any], op_id: str) -> dict[str, Any]:
    for item in doc["paths"].values():
        for op in item.values():
            if op["operationId"] == op_id:
                return dict(op)
    raise KeyError(op_id)


def check_answer(doc: dict[str, Any], op_id: str, reply: Reply) -> None:
    """The status is documented for the operation and the body matches its schema (for JSON
    Lines: each line matches the route's ``response`` schema)."""
    responses = operation(doc, op_id)["responses"]
    assert str(reply.status) in responses, f"{op_id}: undocumented status {reply.status}"
    spec = responses[str(reply.status)]
    content = spec.get("content")
    if content is None:
        assert reply.body is None
    elif JSONL in content:
        assert reply.headers["Content-Type"] == JSONL
        [route] = [r for r in ROUTES if r.operation_id == op_id]
        validator = Draft202012Validator({"$ref": f"#/components/schemas/{route.response}",
                                          "components": doc["components"]})
        for line in reply.body:
            validator.validate(line)
    else:
        assert reply.headers["Content-Type"].startswith("application/json")
        schema = {**content["application/json"]["schema"], "components": doc["components"]}
        Draft202012Validator(schema).validate(reply.body)
    for name, header in spec.get("headers", {}).items():
        if header.get("required"):
            assert name in reply.headers, f"{op_id} {reply.status}: no {name} header"


@pytest.fixture
async def api(api_daemon: Daemon, document: dict[str, Any]) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(api_daemon, session, document)


class WsClient:
    """A signaling client that validates what it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def join(cls, daemon: Daemon, token: str) -> tuple[WsClient, dict[str, Any]]:
        client = cls(await websockets.connect(f"{daemon.ws}?access_token={token}"))
        join = await client.recv()
        assert join["type"] == "join", join
        return client, join

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        validate_server_message(msg)
        return msg

    async def expect(self, mtype: str, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if msg["type"] == mtype:
                return msg

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send(json.dumps({**msg, "id": "r"}))
        while True:
            reply = await self.recv()
            if reply.get("id") == "r":
                return reply

    async def closed_code(self, timeout: float = 5) -> int | None:
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        await self.ws.close()


_seq = 0


def unique(prefix: str) -> str:
    global _seq
    _seq += 1
    return f"{prefix}-{os.getpid()}-{_seq}"


async def new_room(api: Api, **fields: Any) -> dict[str, Any]:
    reply = await api.call("POST", "/api/rooms", json_body={"name": unique("room"), **fields},
                           op="createRoom")
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def join_room(api: Api, room: str, identity: str,
                    role: str = "participant") -> tuple[WsClient, dict[str, Any]]:
    reply = await api.call("POST", "/api/tokens", op="createToken",
                           json_body={"room": room, "identity": identity, "role": role})
    assert reply.status == 201, reply.body
    return await WsClient.join(api.daemon, reply.body["token"])


# -- the document ------------------------------------------------------------------------------

def test_openapi_document_has_every_route(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item}
    assert documented == {(r.path, r.method) for r in ROUTES}
    for route in ROUTES:
        op = operation(document, route.operation_id)
        assert set(op["responses"]) == {str(route.status), *map(str, error_statuses(route))}
        assert op["security"] == ([{"bearerAuth": []}] if route.grants else [])


async def test_unknown_path_and_method(api: Api) -> None:
    reply = await api.call("GET", "/api/nothing-here")
    assert (reply.status, reply.body["error"]["code"]) == (404, "not_found")
    reply = await api.call("PUT", "/api/rooms")
    assert (reply.status, reply.body["error"]["code"]) == (405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET, POST"


# -- every route: success and each documented error status -------------------------------------

@dataclass
class Req:
    method: str
    path: str
    body: Any = None


@dataclass
class World:
    """A room with a connected participant who published a track, for the route table."""

    api: Api
    room: str
    track_sid: str
    clients: list[WsClient] = field(default_factory=list)

    async def fresh_room(self) -> str:
        return str((await new_room(self.api))["name"])

    async def fresh_participant(self) -> str:
        identity = unique("victim")
        client, _ = await join_room(self.api, self.room, identity)
        self.clients.append(client)
        return identity


def _room_path(route: Route, room: str, identity: str = "alice", track: str = "") -> str:
    return (route.path.replace("{room}", urllib.parse.quote(room, safe=""))
            .replace("{identity}", urllib.parse.quote(identity, safe=""))
            .replace("{track_sid}", track))


async def valid_request(route: Route, w: World) -> Req:
    """A request ``route`` answers with success."""
    room, track = w.room, w.track_sid
    match route.operation_id:
        case "createRoom":
            return Req("POST", route.path, {"name": unique("created")})
        case "deleteRoom":
            return Req("DELETE", _room_path(route, await w.fresh_room()))
        case "removeParticipant":
            return Req("DELETE", _room_path(route, room, await w.fresh_participant()))
        case "updateRoom":
            return Req("PATCH", _room_path(route, room), {"metadata": "{\"topic\":\"q3\"}"})
        case "updateParticipant":
            return Req("PATCH", _room_path(route, room), {"metadata": "vip"})
        case "muteTrack":
            return Req("PATCH", _room_path(route, room, track=track), {"muted": True})
        case "sendData":
            return Req("POST", _room_path(route, room), {"payload": "aGVsbG8="})
        case "createToken":
            return Req("POST", route.path, {"room": room, "identity": "carol"})
        case "replayFailedWebhooks":
            return Req("POST", route.path, {"room_id": room})
        case _:
            assert route.body is None, route.operation_id
            return Req(route.method, _room_path(route, room, track=track))


def error_request(route: Route, status: int, ok: Req, w: World) -> tuple[Req, dict[str, Any]]:
    """A request that ``route`` answers with ``status``; and call options."""
    bad_room = _room_path(route, "no-such-room", track=w.track_sid)
    if status in (401, 403):
        token = None if status == 401 else admin_token(VideoGrant(room_join=True, room=w.room),
                                                        identity="mallory")
        return ok, {"token": token}
    if status == 404:
        if route.operation_id == "createToken":
            return Req(ok.method, ok.path, {"room": "no-such-room", "identity": "x"}), {}
        return Req(ok.method, bad_room, ok.body), {}
    if status == 409:
        return Req(ok.method, ok.path, {"name": w.room}), {}
    if status == 422:
        if route.path_params:
            return Req(ok.method, _room_path(route, "bad room!", track=w.track_sid), ok.body), {}
        if route.body is not None:
            return Req(ok.method, ok.path, {**ok.body, "surprise": 1}), {}
        return Req(ok.method, ok.path + "?colour=red"), {}
    if status == 400:
        if route.body is None:  # a query parameter given twice
            name = route.query[0].name
            return Req(ok.method, f"{ok.path}?{name}={w.room}&{name}={w.room}"), {}
        return Req(ok.method, ok.path), {"data": "{\"metadata\": ",
                                         "headers": {"Content-Type": "application/json"}}
    if status == 413:
        return Req(ok.method, ok.path), {"data": json.dumps({"metadata": "x" * MAX_BODY}),
                                         "headers": {"Content-Type": "application/json"}}
    if status == 415:
        return Req(ok.method, ok.path), {"data": json.dumps(ok.body),
                                         "headers": {"Content-Type": "text/plain"}}
    raise AssertionError(f"no way to provoke {status} on {route.operation_id}")


# statuses that need a daemon of their own, tested below
OTHER_DAEMON = {429: "test_rate_limit_per_api_key_on_every_route",
                501: "test_rs256_admin_tokens_and_no_minting_key",
                503: "test_api_usage.py::test_a_server_without_a_store_answers_503"}

EXPECTED_CODES = {400: {"malformed_request"}, 401: {"token_missing"},
                  403: {"permission_denied"}, 404: {"room_not_found", "not_found"},
                  409: {"room_exists"}, 413: {"request_too_large"},
                  415: {"unsupported_media_type"}, 422: {"invalid_request"},
                  503: {"store_unavailable"}}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.operation_id)
async def test_every_route_success_and_each_error_status(api: Api, route: Route) -> None:
    room = (await new_room(api))["name"]
    alice, _ = await join_room(api, room, "alice")
    w = World(api, room, "", [alice])
    try:
        published = await alice.request({"type": "add_track", "cid": "cam", "kind": "video",
                                         "source": "camera", "width": 640, "height": 480})
        w.track_sid = published["track"]["sid"]
        ok = await valid_request(route, w)
        reply = await api.call(ok.method, ok.path, json_body=ok.body, op=route.operation_id,
                               **({"token": None} if not route.grants else {}))
        assert reply.status == route.status, (route.operation_id, reply.body)
        for status in error_statuses(route):
            if status in OTHER_DAEMON:
                continue
            ok = await valid_request(route, w)
            req, options = error_request(route, status, ok, w)
            reply = await api.call(req.method, req.path, json_body=req.body,
                                   op=route.operation_id, **options)
            assert reply.status == status, (route.operation_id, status, reply.body)
            assert reply.body["error"]["code"] in EXPECTED_CODES[status], reply.body
    finally:
        for c in w.clients:
            await c.close()


# -- auth --------------------------------------------------------------------------------------

async def test_token_errors_are_401_with_their_code(api: Api) -> None:
    now = time.time()
    cases = {
        "token_missing": None,
        "token_expired": admin_token(now=now - 7200, ttl_s=60),
        "token_not_yet_valid": jwt.encode(
            {"iss": API_KEY, "sub": "x", "nbf": int(now) + 600, "exp": int(now) + 3600,
             "video": {"roomList": True}}, API_SECRET, algorithm="HS256"),
        "token_bad_signature": admin_token(secret="s" * 48),
        "token_unknown_key": admin_token(key="nobody"),
        "token_malformed": "not.a.jwt",
        "token_alg_not_allowed": jwt.encode({"iss": API_KEY, "exp": int(now) + 60},
                                            API_SECRET * 2, algorithm="HS512"),
    }
    for code, token in cases.items():
        reply = await api.call("GET", "/api/rooms", token=token, op="listRooms")
        assert (reply.status, reply.body["error"]["code"]) == (401, code), reply.body
        assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="sfu"')
    reply = await api.call("GET", "/api/rooms", token=None, op="listRooms",
                           headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert (reply.status, reply.body["error"]["code"]) == (401, "token_missing")


async def test_grants_and_room_bound_tokens(api: Api) -> None:
    mine = (await new_room(api))["name"]
    other = (await new_room(api))["name"]
    bound = admin_token(VideoGrant(room=mine, room_admin=True, room_list=True,
                                   room_create=True))
    # a token limited to a room acts on that room only
    reply = await api.call("GET", f"/api/rooms/{mine}", token=bound, op="getRoom")
    assert reply.status == 200
    for method, path in (("GET", f"/api/rooms/{other}"),
                         ("GET", f"/api/rooms/{other}/participants"),
                         ("DELETE", f"/api/rooms/{other}")):
        reply = await api.call(method, path, token=bound)
        assert (reply.status, reply.body["error"]["code"]) == (403, "permission_denied")
        assert f"limited to room '{mine}'" in reply.body["error"]["message"]
    reply = await api.call("POST", "/api/tokens", token=bound, op="createToken",
                           json_body={"room": other, "identity": "x"})
    assert reply.status == 403
    reply = await api.call("GET", "/api/rooms", token=bound, op="listRooms")
    assert [r["name"] for r in reply.body["rooms"]] == [mine]
    reply = await api.call("POST", "/api/rooms", token=bound, op="createRoom",
                           json_body={"name": other})
    assert reply.status == 403
    # each route needs its grant
    list_only = admin_token(VideoGrant(room_list=True))
    reply = await api.call("GET", f"/api/rooms/{mine}/participants", token=list_only,
                           op="listParticipants")
    assert reply.status == 403 and "roomAdmin" in reply.body["error"]["message"]
    reply = await api.call("POST", "/api/rooms", token=list_only, op="createRoom")
    assert reply.status == 403 and "roomCreate" in reply.body["error"]["message"]
    no_record = admin_token(VideoGrant(room_create=True))
    reply = await api.call("POST", "/api/rooms", token=no_record, op="createRoom",
                           json_body={"auto_record": True})
    assert reply.status == 403 and "roomRecord" in reply.body["error"]["message"]


# -- rooms -------------------------------------------------------------------------------------

async def test_room_lifecycle_and_live_facts(api: Api) -> None:
    start = time.time() + 3600
    room = await new_room(api, type="webinar", max_participants=50, empty_timeout_s=600,
                          waiting_room=True, auto_record=True, metadata="{\"crm\":42}",
                          start_time=start)
    assert {k: room[k] for k in ("type", "max_participants", "empty_timeout_s", "waiting_room",
                                 "auto_record", "metadata", "start_time", "started_at",
                                 "live_for_s", "num_participants")} == {
        "type": "webinar", "max_participants": 50, "empty_timeout_s": 600,
        "waiting_room": True, "auto_record": True, "metadata": "{\"crm\":42}",
        "start_time": start, "started_at": None, "live_for_s": None, "num_participants": 0}
    name = room["name"]
    # a generated name when none is given; Location names the room
    reply = await api.call("POST", "/api/rooms", op="createRoom")
    assert reply.status == 201 and reply.body["name"].startswith("room-")
    assert reply.headers["Location"] == f"/api/rooms/{reply.body['name']}"
    assert reply.body["type"] == "conference" and reply.body["empty_timeout_s"] == 300

    before = time.time()
    client, join = await join_room(api, name, "host", role="moderator")
    try:
        await asyncio.sleep(0.3)
        got = (await api.call("GET", f"/api/rooms/{name}", op="getRoom")).body
        assert before <= got["started_at"] <= time.time()
        assert 0.25 <= got["live_for_s"] <= time.time() - before + 0.1
        assert got["num_participants"] == 1
        # update metadata: the participants get room_update
        reply = await api.call("PATCH", f"/api/rooms/{name}", op="updateRoom",
                               json_body={"metadata": "{\"topic\":\"retro\"}"})
        assert reply.body["metadata"] == "{\"topic\":\"retro\"}"
        update = await client.expect("room_update")
        assert update["room"]["metadata"] == "{\"topic\":\"retro\"}"
        reply = await api.call("GET", "/api/rooms", op="listRooms")
        assert name in [r["name"] for r in reply.body["rooms"]]
        # delete disconnects everyone
        reply = await api.call("DELETE", f"/api/rooms/{name}", op="deleteRoom")
        assert reply.status == 204
        leave = await client.expect("leave")
        assert leave["reason"] == "room_deleted"
        assert await client.closed_code() == 4010
        reply = await api.call("GET", f"/api/rooms/{name}", op="getRoom")
        assert (reply.status, reply.body["error"]["code"]) == (404, "room_not_found")
    finally:
        await client.close()


async def test_request_validation_messages(api: Api) -> None:
    cases: list[tuple[dict[str, Any] | str, int, str]] = [
        ({"name": "bad name"}, 422, "body.name: 'bad name' does not match"),
        ({"type": "meeting"}, 422, "body.type: 'meeting' is not one of"),
        ({"empty_timeout_s": 5}, 422, "body.empty_timeout_s: 5 is less than the minimum"),
        ({"max_participants": 1.5}, 422, "body.max_participants: 1.5 is not of type"),
        ({"colour": "red"}, 422, "Additional properties are not allowed ('colour'"),
        ([], 422, "body: [] is not of type 'object'"),
        ('{"name": "a", "name": "b"}', 400, "duplicate key 'name'"),
        ('{"start_time": NaN}', 400, "NaN is not JSON"),
        ('{"start_time": 1e999}', 400, "out of range"),
        ('{"metadata": "\\ud800"}', 400, "lone UTF-16 surrogate"),
    ]
    for body, status, fragment in cases:
        data = body if isinstance(body, str) else json.dumps(body)
        reply = await api.call("POST", "/api/rooms", data=data, op="createRoom",
                               headers={"Content-Type": "application/json"})
        assert reply.status == status, (body, reply.body)
        assert fragment in reply.body["error"]["message"], reply.body
    reply = await api.call("POST", "/api/rooms", data=b"\xff\xfe", op="createRoom",
                           headers={"Content-Type": "application/json"})
    assert (reply.status, reply.body["error"]["code"]) == (400, "malformed_request")
    reply = await api.call("GET", "/api/rooms?colour=red", op="listRooms")
    assert reply.status == 422 and "query.colour: unknown query parameter" in \
        reply.body["error"]["message"]
    reply = await api.call("GET", "/api/rooms/" + "r" * 129, op="getRoom")
    assert reply.status == 422 and reply.body["error"]["message"].startswith("path.room:")


async def test_body_size_limit(api: Api) -> None:
    # Content-Length over the limit: refused before the body is read
    reply = await api.call("POST", "/api/rooms", data="x" * (MAX_BODY + 1), op="createRoom",
                           headers={"Content-Type": "application/json"})
    assert (reply.status, reply.body["error"]["code"]) == (413, "request_too_large")

    # chunked, without Content-Length: refused once the limit is passed
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    async with api.session.post(api.daemon.http + "/api/rooms", data=chunks(), headers={
            "Authorization": f"Bearer {api.token}",
            "Content-Type": "application/json"}) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "request_too_large"
    # just under the limit is fine
    body = json.dumps({"metadata": "m" * (MAX_BODY - 64)})
    reply = await api.call("POST", "/api/rooms", data=body, op="createRoom",
                           headers={"Content-Type": "application/json"})
    assert reply.status == 201


# -- participants ------------------------------------------------------------------------------

async def test_participants_over_rest_with_real_clients(api: Api) -> None:
    name = (await new_room(api))["name"]
    alice, _ = await join_room(api, name, "alice")
    bob, _ = await join_room(api, name, "bob")
    base = f"/api/rooms/{name}"
    try:
        await alice.expect("participant_joined")
        reply = await api.call("GET", base + "/participants", op="listParticipants")
        assert sorted(p["identity"] for p in reply.body["participants"]) == ["alice", "bob"]
        assert all(p["is_hidden"] is False for p in reply.body["participants"])
        reply = await api.call("GET", base + "/participant_count", op="countParticipants")
        assert reply.body == {"room": name, "count": 2, "total": 2}
        reply = await api.call("GET", base + "/participants/bob", op="getParticipant")
        assert reply.body["identity"] == "bob" and reply.body["permission"]["can_publish"]
        reply = await api.call("GET", base + "/participants/bob/exists", op="participantExists")
        assert reply.body == {"room": name, "identity": "bob", "exists": True}
        reply = await api.call("GET", base + "/participants/zed/exists", op="participantExists")
        assert reply.body["exists"] is False
        reply = await api.call("GET", base + "/participants/zed", op="getParticipant")
        assert (reply.status, reply.body["error"]["code"]) == (404, "not_found")

        # update permission and metadata: both clients hear of it
        reply = await api.call("PATCH", base + "/participants/bob", op="updateParticipant",
                               json_body={"name": "Bob (guest)", "metadata": "{\"tier\":1}",
                                          "permission": {"can_publish": False}})
        assert reply.status == 200
        assert (reply.body["name"], reply.body["metadata"]) == ("Bob (guest)", "{\"tier\":1}")
        assert reply.body["permission"]["can_publish"] is False
        for client in (alice, bob):
            update = await client.expect("participant_updated")
            assert update["participant"]["permission"]["can_publish"] is False
        denied = await bob.request({"type": "add_track", "cid": "c", "kind": "audio",
                                    "source": "microphone"})
        assert denied["code"] == "permission_denied"

        # send data to one participant, then to everyone
        reply = await api.call("POST", base + "/data", op="sendData", json_body={
            "payload": "aGVsbG8=", "topic": "chat", "destination_identities": ["alice"]})
        assert reply.body == {"recipients": 1}
        data = await alice.expect("data")
        assert (data["payload"], data["topic"], data["from_identity"]) == \
            ("aGVsbG8=", "chat", None)
        reply = await api.call("POST", base + "/data", op="sendData",
                               json_body={"payload": "aGk=", "kind": "lossy"})
        assert reply.body == {"recipients": 2}
        assert (await bob.expect("data"))["payload"] == "aGk="

        # remove bob: his client gets leave, the others participant_left, he is gone
        reply = await api.call("DELETE", base + "/participants/bob", op="removeParticipant")
        assert reply.status == 204
        leave = await bob.expect("leave")
        assert (leave["reason"], leave["can_reconnect"]) == ("participant_removed", False)
        assert await bob.closed_code() == 4010
        left = await alice.expect("participant_left")
        assert (left["identity"], left["reason"]) == ("bob", "participant_removed")
        reply = await api.call("GET", base + "/participants/bob/exists", op="participantExists")
        assert reply.body["exists"] is False
        reply = await api.call("GET", base + "/participants", op="listParticipants")
        assert [p["identity"] for p in reply.body["participants"]] == ["alice"]
        reply = await api.call("DELETE", base + "/participants/bob", op="removeParticipant")
        assert reply.status == 404
    finally:
        await alice.close()
        await bob.close()


async def test_mute_over_rest_stops_the_track_at_the_other_participant(api: Api) -> None:
    name = (await new_room(api))["name"]
    tokens = {}
    for identity in ("pub", "sub"):
        reply = await api.call("POST", "/api/tokens", op="createToken",
                               json_body={"room": name, "identity": identity})
        tokens[identity] = reply.body["token"]
    pub = AiortcParticipant(api.daemon.ws, tokens["pub"])
    sub = AiortcParticipant(api.daemon.ws, tokens["sub"])
    recorder: FrameRecorder | None = None
    path = f"/api/rooms/{name}/participants/pub/tracks/"
    try:
        await sub.connect()
        await pub.connect()
        [sid] = await pub.publish(VideoStreamTrack())
        recorder = FrameRecorder(await sub.wait_track("video", 20))
        assert await recorder.wait_frame(lambda f: True, since=0, timeout=20), "no video"
        flowing_from = time.monotonic()
        await asyncio.sleep(1.0)
        assert len(recorder.since(flowing_from)) >= 10, "video is not flowing before the mute"

        reply = await api.call("PATCH", path + sid, op="muteTrack", json_body={"muted": True})
        assert reply.status == 200 and reply.body["muted"] is True and reply.body["sid"] == sid
        update = await asyncio.wait_for(sub.wait_for(
            lambda m: m["type"] == "participant_updated"
            and any(t["sid"] == sid and t["muted"] for t in m["participant"]["tracks"])), 5)
        assert update
        await asyncio.sleep(0.5)  # frames already decoded or in aiortc's jitter buffer
        quiet_from = time.monotonic()
        await asyncio.sleep(2.0)
        during = recorder.since(quiet_from)
        assert not during, f"{len(during)} frames arrived while the track was muted"

        reply = await api.call("PATCH", path + sid, op="muteTrack", json_body={"muted": False})
        assert reply.body["muted"] is False
        unmuted_at = time.monotonic()
        resumed = await recorder.wait_frame(lambda f: True, since=unmuted_at, timeout=10)
        assert resumed, "video did not resume after unmute"
        await asyncio.sleep(1.0)
        assert len(recorder.since(unmuted_at)) >= 10, "video did not keep flowing after unmute"

        reply = await api.call("PATCH", path + "TR_nonexistent", op="muteTrack",
                               json_body={"muted": True})
        assert (reply.status, reply.body["error"]["code"]) == (404, "not_found")
    finally:
        if recorder is not None:
            await recorder.stop()
        await pub.close()
        await sub.close()


# -- tokens ------------------------------------------------------------------------------------

async def test_tokens_roles_and_join_url(api: Api, api_daemon: Daemon) -> None:
    conference = (await new_room(api))["name"]
    webinar = (await new_room(api, type="webinar"))["name"]
    verifier = TokenVerifier({API_KEY: API_SECRET})
    expected = {  # role -> (can_publish in a conference, in a webinar, data, metadata, admin)
        "moderator": (True, True, True, True, True),
        "participant": (True, False, True, True, False),
        "viewer": (False, False, False, False, False),
    }
    for role, (pub_conf, pub_web, data, own_md, admin) in expected.items():
        for room, can_publish in ((conference, pub_conf), (webinar, pub_web)):
            before = time.time()
            reply = await api.call("POST", "/api/tokens", op="createToken", json_body={
                "room": room, "identity": f"{role}-1", "role": role, "name": "Ann",
                "metadata": "{\"crm_id\":7}", "ttl_s": 600})
            assert reply.status == 201, reply.body
            body = reply.body
            assert (body["room"], body["identity"], body["role"]) == (room, f"{role}-1", role)
            assert before + 599 <= body["expires_at"] <= time.time() + 600
            grant = body["grant"]
            assert (grant["can_publish"], grant["can_publish_data"],
                    grant["can_update_own_metadata"], grant["room_admin"]) == \
                (can_publish, data, own_md, admin)
            claims = verifier.verify(body["token"], time.time())
            assert claims.grant.room == room and claims.grant.room_join
            assert claims.grant.can_publish is can_publish and claims.grant.room_admin is admin
            assert (claims.name, claims.metadata) == ("Ann", "{\"crm_id\":7}")
            assert claims.expires_at == body["expires_at"]
            url = urllib.parse.urlsplit(body["join_url"])
            assert f"{url.scheme}://{url.netloc}{url.path}" == JOIN_BASE + "/call/"
            assert urllib.parse.parse_qs(url.query) == {"roomId": [room],
                                                        "token": [body["token"]]}
    # the default role is participant; the token joins over signaling
    reply = await api.call("POST", "/api/tokens", op="createToken",
                           json_body={"room": webinar, "identity": "attendee"})
    assert reply.body["role"] == "participant"
    client, join = await WsClient.join(api_daemon, reply.body["token"])
    try:
        assert join["participant"]["permission"]["can_publish"] is False
        denied = await client.request({"type": "add_track", "cid": "c", "kind": "video",
                                       "source": "camera"})
        assert denied["code"] == "permission_denied"
    finally:
        await client.close()
    # a moderator's roomAdmin works over signaling, in its own room
    reply = await api.call("POST", "/api/tokens", op="createToken",
                           json_body={"room": conference, "identity": "mod", "role": "moderator"})
    mod, _ = await WsClient.join(api_daemon, reply.body["token"])
    try:
        listed = await mod.request({"type": "list_participants"})
        assert listed["type"] == "participants_list"
        other = await mod.request({"type": "list_participants", "room": webinar})
        assert other["code"] == "permission_denied"
    finally:
        await mod.close()
    for bad, fragment in (({"room": conference, "identity": "x", "role": "host"},
                           "body.role: 'host' is not one of"),
                          ({"room": conference, "identity": "x", "ttl_s": 30},
                           "body.ttl_s: 30 is less than the minimum of 60"),
                          ({"room": conference, "identity": ""},
                           "body.identity: '' should be non-empty")):
        reply = await api.call("POST", "/api/tokens", op="createToken", json_body=bad)
        assert reply.status == 422 and fragment in reply.body["error"]["message"], reply.body


# -- CORS, rate limits, other key types ------------------------------------------------------

async def test_cors_off_by_default_and_configurable_origins(
        tmp_path: Path, api: Api) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    # the api daemon lists no origin: no CORS headers, preflight is an unknown method
    reply = await api.call("OPTIONS", "/api/rooms", token=None, headers=preflight)
    assert reply.status == 405 and "Access-Control-Allow-Origin" not in reply.headers
    reply = await api.call("GET", "/api/rooms", headers={"Origin": ORIGIN})
    assert reply.status == 200 and "Access-Control-Allow-Origin" not in reply.headers

    d = start_daemon(tmp_path, {"api": {"cors_origins": [ORIGIN]}})
    try:
        async with aiohttp.ClientSession() as session:
            cors = Api(d, session)
            reply = await cors.call("OPTIONS", "/api/rooms", token=None, headers=preflight)
            assert reply.status == 204
            assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert reply.headers["Access-Control-Allow-Methods"] == "GET, POST"
            assert "Authorization" in reply.headers["Access-Control-Allow-Headers"]
            reply = await cors.call("GET", "/api/rooms", headers={"Origin": ORIGIN})
            assert reply.status == 200
            assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "Retry-After" in reply.headers["Access-Control-Expose-Headers"]
            # errors carry the CORS headers too, so the page can read them
            reply = await cors.call("GET", "/api/rooms", token=None, headers={"Origin": ORIGIN})
            assert reply.status == 401
            assert reply.headers["Access-Control-Allow-Origin"] == ORIGIN
            other = {**preflight, "Origin": "https://evil.example.com"}
            reply = await cors.call("OPTIONS", "/api/rooms", token=None, headers=other)
            assert reply.status == 405 and "Access-Control-Allow-Origin" not in reply.headers
    finally:
        stop_daemon(d)


def _add_hmac_key(d_config: Path, key: str, secret: str) -> None:
    secret_file = d_config.parent / f"{key}.secret"
    secret_file.write_text(secret)
    with d_config.open("a") as f:
        f.write(f'[[auth.hmac_keys]]\nkey = "{key}"\nsecret_file = "{secret_file}"\n')


async def test_rate_limit_per_api_key_on_every_route(tmp_path: Path) -> None:
    other_secret = tmp_path / "other.secret"
    other_secret.write_text("o" * 48)
    d = start_edited(tmp_path, {"api": {"rate_limit_per_s": 0.2, "rate_limit_burst": 2}},
                     lambda text: text + '[[auth.hmac_keys]]\nkey = "APIother"\n'
                                         f'secret_file = "{other_secret}"\n')
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(d, session)
            api.doc = (await api.call("GET", "/api/openapi.json", token=None)).body
            for _ in range(2):  # the burst
                assert (await api.call("GET", "/api/rooms", op="listRooms")).status == 200
            for route in ROUTES:
                if not route.grants:
                    continue
                path = _room_path(route, "r1", "x", "TR_x")
                reply = await api.call(route.method, path, op=route.operation_id,
                                       json_body={} if route.body else None)
                assert reply.status == 429, (route.operation_id, reply.body)
                assert reply.body["error"]["code"] == "rate_limited"
                assert 1 <= int(reply.headers["Retry-After"]) <= 5
            # the document needs no token and is not limited
            assert (await api.call("GET", "/api/openapi.json", token=None)).status == 200
            # another API key has its own budget
            other = admin_token(key="APIother", secret="o" * 48)
            reply = await api.call("GET", "/api/rooms", token=other, op="listRooms")
            assert reply.status == 200
            # a refused token never spends a key's budget
            forged = admin_token(key="APIother", secret="x" * 48)
            for _ in range(5):
                assert (await api.call("GET", "/api/rooms", token=forged)).status == 401
            reply = await api.call("GET", "/api/rooms", token=other, op="listRooms")
            assert reply.status == 200
    finally:
        stop_daemon(d)


async def test_rs256_admin_tokens_and_no_minting_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "issuer.pub.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def only_public_key(text: str) -> str:
        return (text[:text.index("[[auth.hmac_keys]]")]
                + f'[[auth.public_keys]]\nkid = "issuer"\nalg = "RS256"\npem_file = "{pem}"\n')

    d = start_edited(tmp_path, {"api": FAST}, only_public_key)
    try:
        now = int(time.time())
        token = jwt.encode({"sub": "backend", "exp": now + 600,
                            "video": {"roomCreate": True, "roomAdmin": True}},
                           key, algorithm="RS256", headers={"kid": "issuer"})
        async with aiohttp.ClientSession() as session:
            api = Api(d, session, token=token)
            api.doc = (await api.call("GET", "/api/openapi.json", token=None)).body
            reply = await api.call("POST", "/api/rooms", op="createRoom",
                                   json_body={"name": "rs"})
            assert reply.status == 201
            reply = await api.call("POST", "/api/tokens", op="createToken",
                                   json_body={"room": "rs", "identity": "a"})
            assert (reply.status, reply.body["error"]["code"]) == (501, "not_implemented")
    finally:
        stop_daemon(d)


# -- schemathesis ------------------------------------------------------------------------------

# The usage routes' window [from, to) may not run backwards (422): a constraint between two
# query parameters, which OpenAPI cannot state. This hook teaches it to schemathesis by putting
# the two values in order before a request goes out (each value stays as generated, so valid
# and invalid values are fuzzed as before, and every check stays on).
SCHEMATHESIS_HOOKS = '''
import schemathesis

from sfu.api.times import unix_time


def _seconds(value):  # a number, a numeral or a date-time; None for anything else
    for read in (float, unix_time):
        try:
            return read(value)
        except (TypeError, ValueError):
            pass
    return None


@schemathesis.hook
def before_call(ctx, case, kwargs):
    query = case.query
    if isinstance(query, dict) and "from" in query and "to" in query:
        start, end = _seconds(query["from"]), _seconds(query["to"])
        if start is not None and end is not None and start > end:
            query["from"], query["to"] = query["to"], query["from"]
'''


@pytest.mark.timeout(150)
async def test_schemathesis_checks_all_pass(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, {"api": FAST})
    hooks = tmp_path / "schemathesis_hooks.py"
    hooks.write_text(SCHEMATHESIS_HOOKS)
    try:
        # the CLI of the interpreter running the tests (schemathesis is in the [test] extra)
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", "--checks", "all",
               "--max-examples", "25", "--seed", "20261123", "--generation-database", "none",
               "--no-color", "--request-timeout", "10",
               "--header", f"Authorization: Bearer {admin_token(ttl_s=900)}",
               f"{d.http}/api/openapi.json"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path, env={**os.environ, "SCHEMATHESIS_HOOKS": str(hooks)})
        out_b, _ = await asyncio.wait_for(proc.communicate(), 140)
        out = out_b.decode(errors="replace")
        summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-4000:]
        print(summary)
        assert proc.returncode == 0, out[-20000:]
        tested = len(ROUTES) - 1  # schemathesis leaves out the route serving the document
        assert f"{tested} selected / {tested} total" in out
        assert "failed" not in summary
        assert "Internal Server Error" not in out
        assert "api_handler_failed" not in d.log()
    finally:
        stop_daemon(d)

