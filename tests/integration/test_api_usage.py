"""Usage records (call-detail records) and failed webhooks over the REST API, against real
daemons with a real HTTP client.

Participants are real signaling clients (WebSockets) that join and leave; the sessions,
summary and JSON Lines routes must show them. Webhooks go to an endpoint where nothing
listens, fail after ``webhooks.max_age_s``, are listed, and are replayed to a real aiohttp
receiver that checks their Standard Webhooks signatures with the ``standardwebhooks``
package. Every answer is checked against the daemon's own OpenAPI document.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from sfu.api import ApiServer
from sfu.config import ApiConfig
from sfu.rooms import RoomService
from signaling.auth import TokenVerifier, VideoGrant
from tests.conftest import API_KEY, API_SECRET, Daemon, free_port, start_daemon, stop_daemon
from tests.integration.test_api import (
    FAST,
    JSONL,
    Api,
    WsClient,
    admin_token,
    new_room,
    unique,
)

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")
SESSIONS = "/api/usage/sessions"
SUMMARY = "/api/usage/summary"
EXPORT = "/api/usage/sessions.jsonl"
FAILED = "/api/webhooks/failed"
REPLAY = "/api/webhooks/failed/replay"


@pytest.fixture(scope="module")
def usage_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("usage"), {
        "api": FAST, "server": {"drain_timeout_s": 0.5}})
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def document(usage_daemon: Daemon) -> dict[str, Any]:
    status, body = usage_daemon.get("/api/openapi.json")
    assert status == 200
    doc: dict[str, Any] = json.loads(body)
    return doc


@pytest.fixture
async def api(usage_daemon: Daemon, document: dict[str, Any]) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(usage_daemon, session, document)


# -- helpers -----------------------------------------------------------------------------------

def qs(**params: Any) -> str:
    """A query string; floats keep every digit (``repr``), None leaves the parameter out."""
    given = {("from" if k == "from_" else k): (repr(v) if isinstance(v, float) else v)
             for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(given) if given else ""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


async def until(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 5) -> T:
    """``probe``'s first answer that is not None (the store commits events off the loop)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await probe()
        if got is not None:
            return got
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def join(api: Api, room: str, identity: str) -> WsClient:
    client, _ = await WsClient.join(api.daemon, api.daemon.token(identity, room))
    return client


async def leave(client: WsClient) -> None:
    await client.ws.send(json.dumps({"type": "leave"}))
    assert (await client.expect("leave"))["reason"] == "client_request"
    await client.closed_code()


async def sessions(api: Api, **query: Any) -> list[dict[str, Any]]:
    reply = await api.call("GET", SESSIONS + qs(limit=10000, **query), op="listSessions")
    assert reply.status == 200, reply.body
    assert reply.body["next_cursor"] is None
    return list(reply.body["sessions"])


async def summary(api: Api, **query: Any) -> dict[str, Any]:
    reply = await api.call("GET", SUMMARY + qs(**query), op="getUsageSummary")
    assert reply.status == 200, reply.body
    return dict(reply.body)


async def export(api: Api, **query: Any) -> list[dict[str, Any]]:
    reply = await api.call("GET", EXPORT + qs(**query), op="exportSessions")
    assert reply.status == 200, reply.body
    return list(reply.body)


async def closed_sessions(api: Api, room: str, count: int) -> list[dict[str, Any]]:
    """The room's sessions, once there are ``count`` and all have ended."""
    async def probe() -> list[dict[str, Any]] | None:
        got = await sessions(api, room_id=room)
        return got if len(got) == count and all(s["left_at"] for s in got) else None
    return await until(probe)


async def visit(api: Api, room: str, identity: str) -> None:
    """Join ``room`` over signaling and leave again."""
    await leave(await join(api, room, identity))


# -- sessions and summary ----------------------------------------------------------------------

async def test_sessions_and_summary_show_who_joined_and_left(api: Api) -> None:
    room = await new_room(api)
    name = room["name"]
    before = time.time()
    alice = await join(api, name, "alice")
    bob = await join(api, name, "bob")
    try:
        await asyncio.sleep(0.3)
        await leave(bob)

        async def bob_left() -> list[dict[str, Any]] | None:
            got = await sessions(api, room_id=name)
            return got if len(got) == 2 and got[1]["left_at"] is not None else None

        live = await until(bob_left)
        # alice is still there: her record is open, the summary says so
        assert [s["identity"] for s in live] == ["alice", "bob"]  # in join order
        assert (live[0]["left_at"], live[0]["duration_s"], live[0]["leave_reason"]) == \
            (None, None, None)
        got = await summary(api, room_id=name)
        assert (got["sessions"], got["open_sessions"], got["unique_participants"]) == (2, 1, 2)
        assert (got["last_leave"], got["duration_s"]) == (None, None)

        reply = await api.call("DELETE", f"/api/rooms/{name}/participants/alice",
                               op="removeParticipant")
        assert reply.status == 204
    finally:
        await alice.close()
        await bob.close()
    after = time.time()

    records = await closed_sessions(api, name, 2)
    by_identity = {r["identity"]: r for r in records}
    assert by_identity["bob"]["leave_reason"] == "client_request"
    assert by_identity["alice"]["leave_reason"] == "participant_removed"
    for r in records:
        assert (r["room"], r["room_sid"], r["hidden"], r["name"]) == \
            (name, room["sid"], False, "")
        assert r["participant_sid"].startswith("PA_") and r["session_id"]
        assert before <= r["joined_at"] < r["left_at"] <= after
        assert r["duration_s"] == round(r["left_at"] - r["joined_at"], 3)
        assert r["duration_s"] >= 0.25
        assert (r["bytes_in"], r["bytes_out"]) == (0, 0)  # no media transport
    assert len({r["session_id"] for r in records}) == 2

    got = await summary(api, room_id=name)
    first = min(r["joined_at"] for r in records)
    last = max(r["left_at"] for r in records)
    assert got == {
        "room": name, "from": None, "to": None, "unique_participants": 2, "sessions": 2,
        "open_sessions": 0, "first_join": first, "last_leave": last,
        "duration_s": round(last - first, 3),
        "participant_seconds": pytest.approx(sum(r["duration_s"] for r in records), abs=0.01),
        "bytes_in": 0, "bytes_out": 0}
    # participant-seconds count only the time inside the window
    cut = by_identity["alice"]["joined_at"] + 0.1
    got = await summary(api, room_id=name, from_=cut)
    assert got["from"] == cut and got["to"] is None
    assert got["participant_seconds"] == pytest.approx(
        sum(r["left_at"] - max(r["joined_at"], cut) for r in records), abs=0.01)


async def test_window_edges(api: Api) -> None:
    name = (await new_room(api))["name"]
    client = await join(api, name, "edge")
    await asyncio.sleep(0.2)
    await leave(client)
    [record] = await closed_sessions(api, name, 1)
    j, left = record["joined_at"], record["left_at"]
    cases: list[tuple[float | str | None, float | str | None, bool]] = [
        (None, None, True),
        (left, None, False),           # it left exactly when the window starts: outside
        (left - 0.001, None, True),
        (None, j, False),              # it joined exactly when the window ends: outside
        (None, j + 0.001, True),
        (j, left, True),
        (left, left, False),
        ((j + left) / 2, (j + left) / 2, True),  # from = to: who was there at that instant
        (iso(j - 60), iso(j - 30), False),       # RFC 3339 date-times
        (iso(j - 60), iso(left + 60), True),
        (iso(left + 1), None, False),
        (int(j) - 3600, int(left) + 3600, True),  # whole unix seconds
    ]
    for start, end, inside in cases:
        window = {"room_id": name, "from_": start, "to": end}
        expected = [record] if inside else []
        assert await sessions(api, **window) == expected, (start, end)
        assert await export(api, **window) == expected, (start, end)
        got = await summary(api, **window)
        assert got["sessions"] == len(expected), (start, end)
        if isinstance(start, str):  # the summary echoes the window in unix seconds
            assert got["from"] == pytest.approx(datetime.fromisoformat(start).timestamp())


async def test_room_filter_by_name_and_by_sid(api: Api) -> None:
    name = unique("reused")
    first = await new_room(api, name=name)
    await visit(api, name, "alice")
    await closed_sessions(api, name, 1)
    assert (await api.call("DELETE", f"/api/rooms/{name}", op="deleteRoom")).status == 204
    second = await new_room(api, name=name)  # the same name, another room (another sid)
    assert second["sid"] != first["sid"]
    await visit(api, name, "bob")
    other = (await new_room(api))["name"]
    await visit(api, other, "carol")
    await closed_sessions(api, other, 1)

    by_name = await closed_sessions(api, name, 2)  # a name: every room of that name
    assert [(s["identity"], s["room_sid"]) for s in by_name] == \
        [("alice", first["sid"]), ("bob", second["sid"])]
    assert [s["identity"] for s in await sessions(api, room_id=first["sid"])] == ["alice"]
    assert [s["identity"] for s in await sessions(api, room_id=second["sid"])] == ["bob"]
    assert [s["identity"] for s in await export(api, room_id=second["sid"])] == ["bob"]
    assert [s["identity"] for s in await sessions(api, room_id=other)] == ["carol"]
    assert (await summary(api, room_id=first["sid"]))["sessions"] == 1
    assert (await summary(api, room_id=name))["sessions"] == 2
    assert await sessions(api, room_id="RM_nosuchroom") == []
    assert (await summary(api, room_id="no-such-room"))["sessions"] == 0
    # without room_id: every room
    everyone = {(s["room"], s["identity"]) for s in await sessions(api)}
    assert {(name, "alice"), (name, "bob"), (other, "carol")} <= everyone


async def test_pagination_with_cursor(api: Api) -> None:
    name = (await new_room(api))["name"]
    for identity in ("p1", "p2", "p3", "p2", "p4"):  # p2 twice: two sessions, one person
        await visit(api, name, identity)
    full = await closed_sessions(api, name, 5)
    assert [s["identity"] for s in full] == ["p1", "p2", "p3", "p2", "p4"]

    pages: list[list[str]] = []
    cursor: int | None = None
    while True:
        reply = await api.call("GET", SESSIONS + qs(room_id=name, limit=2, cursor=cursor),
                               op="listSessions")
        assert reply.status == 200, reply.body
        pages.append([s["session_id"] for s in reply.body["sessions"]])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, int)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(pages, []) == [s["session_id"] for s in full]
    # exactly a page's worth: the last full page says there is no more
    reply = await api.call("GET", SESSIONS + qs(room_id=name, limit=5), op="listSessions")
    assert len(reply.body["sessions"]) == 5 and reply.body["next_cursor"] is None
    got = await summary(api, room_id=name)
    assert (got["sessions"], got["unique_participants"]) == (5, 4)


async def test_jsonl_export_equals_the_json_route(api: Api) -> None:
    name = (await new_room(api))["name"]
    for identity in ("x1", "x2", "x3"):
        await visit(api, name, identity)
    records = await closed_sessions(api, name, 3)
    async with api.session.get(api.daemon.http + EXPORT + qs(room_id=name),
                               headers={"Authorization": f"Bearer {api.token}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == JSONL
        assert resp.headers.get("Transfer-Encoding") == "chunked"  # streamed, not buffered
        raw = await resp.read()
    lines = raw.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 4  # one object per line, each line ends
    assert [json.loads(line) for line in lines[:-1]] == records
    # the whole store, and a window, agree with the JSON route too
    assert await export(api) == await sessions(api)
    mid = records[1]["joined_at"]
    assert await export(api, from_=mid) == await sessions(api, from_=mid)
    assert await export(api, room_id="no-such-room") == []


@pytest.mark.timeout(180)
async def test_jsonl_export_streams_many_pages(api: Api) -> None:
    """More sessions than one store read returns (1000): the export reads page by page."""
    name = (await new_room(api))["name"]
    count = 1010
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            await visit(api, name, f"bulk-{i}")

    await asyncio.gather(*(one(i) for i in range(count)))
    records = await closed_sessions(api, name, count)
    exported = await export(api, room_id=name)
    assert len(exported) == count
    assert exported == records
    assert len({r["session_id"] for r in exported}) == count


# -- errors ------------------------------------------------------------------------------------

ROUTES_BY_PATH = {SESSIONS: "listSessions", SUMMARY: "getUsageSummary",
                  EXPORT: "exportSessions", FAILED: "listFailedWebhooks"}


async def error(api: Api, path: str, status: int, code: str, *, token: str | None = "default",
                method: str = "GET", body: Any = None) -> str:
    op = ROUTES_BY_PATH.get(path.partition("?")[0], "replayFailedWebhooks")
    reply = await api.call(method, path, token=token, json_body=body, op=op)
    assert (reply.status, reply.body["error"]["code"]) == (status, code), (path, reply.body)
    return str(reply.body["error"]["message"])


async def test_each_error_status(api: Api) -> None:
    mine = (await new_room(api))["name"]
    other = (await new_room(api))["name"]
    await visit(api, mine, "m1")
    await visit(api, other, "o1")
    await closed_sessions(api, mine, 1)
    await closed_sessions(api, other, 1)
    for path in (SESSIONS, SUMMARY, EXPORT, FAILED):
        # 400: a parameter given twice
        message = await error(api, f"{path}?room_id={mine}&room_id={other}", 400,
                              "malformed_request")
        assert message == "query.room_id: given 2 times (give it once)"
        # 422: an unknown parameter, a bad value
        message = await error(api, f"{path}?colour=red", 422, "invalid_request")
        assert message == "query.colour: unknown query parameter"
        message = await error(api, f"{path}?room_id=a%20b", 422, "invalid_request")
        assert message.startswith("query.room_id: 'a b' does not match")
        # 401
        assert await error(api, path, 401, "token_missing", token=None)
        # 403: no roomAdmin; a token bound to a room asks about another, or about all
        no_admin = admin_token(VideoGrant(room_list=True, room_create=True))
        message = await error(api, path, 403, "permission_denied", token=no_admin)
        assert message == "token does not grant roomAdmin"
        bound = admin_token(VideoGrant(room=mine, room_admin=True))
        message = await error(api, path + qs(room_id=other), 403, "permission_denied",
                              token=bound)
        assert message == f"token is limited to room {mine!r}, not {other!r}"
        message = await error(api, path, 403, "permission_denied", token=bound)
        assert message == f"token is limited to room {mine!r}: give room_id={mine}"
        reply = await api.call("GET", path + qs(room_id=mine), token=bound,
                               op=ROUTES_BY_PATH[path])
        assert reply.status == 200, reply.body
    for path in (SESSIONS, SUMMARY):
        for bad, message in (
                (qs(limit=0), "query.limit: 0 is less than the minimum of 1"),
                (qs(from_="yesterday"), "query.from: 'yesterday' is not a 'date-time' "
                                        "(expected unix seconds or an RFC 3339 date-time"),
                (qs(from_=-5), "query.from: -5 is less than the minimum of 0"),
                (qs(to="2026-02-30T10:00:00Z"),
                 "query.to: '2026-02-30T10:00:00Z' is not a 'date-time' (day is out of "
                 "range for month)")):
            if path == SUMMARY and "limit" in bad:
                message = "query.limit: unknown query parameter"
            got = await error(api, path + bad, 422, "invalid_request")
            assert got.startswith(message), got
        # 422: a window that ends before it starts
        message = await error(api, path + qs(from_=1700000100, to=1700000000), 422,
                              "invalid_request")
        assert message == "query.from: 1700000100 is after query.to: 1700000000"
        message = await error(api, path + qs(from_="2026-11-23T18:00:00Z", to=1795456799.5),
                              422, "invalid_request")
        assert message == ("query.from: '2026-11-23T18:00:00Z' (1795456800.000 unix s) is "
                           "after query.to: 1795456799.5")
    # the bound token sees its own room's sessions only
    bound = admin_token(VideoGrant(room=mine, room_admin=True))
    reply = await api.call("GET", SESSIONS + qs(room_id=mine), token=bound, op="listSessions")
    assert [s["identity"] for s in reply.body["sessions"]] == ["m1"]
    # the replay route: the same grants, and its body is checked
    assert await error(api, REPLAY, 401, "token_missing", method="POST", body={}, token=None)
    assert await error(api, REPLAY, 403, "permission_denied", method="POST", body={},
                       token=bound)
    message = await error(api, REPLAY, 403, "permission_denied", method="POST",
                          body={"room_id": other}, token=bound)
    assert message == f"token is limited to room {mine!r}, not {other!r}"
    message = await error(api, REPLAY, 422, "invalid_request", method="POST",
                          body={"ids": [0]})
    assert message.startswith("body.ids[0]: 0 is less than the minimum of 1")
    message = await error(api, REPLAY, 422, "invalid_request", method="POST", body={"all": 1})
    assert "Additional properties are not allowed ('all'" in message
    message = await error(api, REPLAY + "?room_id=x", 422, "invalid_request", method="POST",
                          body={})
    assert message == "query.room_id: unknown query parameter"
    reply = await api.call("POST", REPLAY, token=bound, json_body={"room_id": mine},
                           op="replayFailedWebhooks")
    assert (reply.status, reply.body) == (200, {"replayed": 0})


async def test_a_server_without_a_store_answers_503(document: dict[str, Any]) -> None:
    """The daemon always keeps a store; an ApiServer given none (on real sockets) says so."""
    rooms = RoomService(auto_create=True, max_participants=0, empty_timeout_s=300,
                        resume_window_s=30, rng=random.Random(1))
    server = ApiServer(ApiConfig(), verifier=TokenVerifier({API_KEY: API_SECRET}), rooms=rooms,
                       deliver=lambda outs: None, minting_keys={API_KEY: API_SECRET},
                       join_base_url="http://127.0.0.1", store=None)
    app = web.Application()
    server.mount(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            fake = Daemon(proc=None, http_port=port, metrics_port=0, udp_port=0,  # type: ignore[arg-type]
                          config_path=Path(), log_path=Path())
            api = Api(fake, session, document)
            for method, path, body in (("GET", SESSIONS, None), ("GET", SUMMARY, None),
                                       ("GET", EXPORT, None), ("GET", FAILED, None),
                                       ("POST", REPLAY, {})):
                message = await error(api, path, 503, "store_unavailable", method=method,
                                      body=body)
                assert message.startswith("this server keeps no store")
            # the checks before it still come first
            assert await error(api, SESSIONS + "?colour=red", 422, "invalid_request")
            assert await error(api, SESSIONS, 401, "token_missing", token=None)
    finally:
        await runner.cleanup()


# -- failed webhooks ---------------------------------------------------------------------------

class Receiver:
    """A webhook endpoint on 127.0.0.1: records each request's headers and body."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.got.append(({k.lower(): v for k, v in request.headers.items()},
                             await request.read()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hooks", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_failed_webhooks_are_listed_and_replayed_in_order_signed(
        tmp_path: Path) -> None:
    port = free_port()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    secret_file = tmp_path / "webhook_secret"
    secret_file.write_text(secret)
    d = start_daemon(tmp_path, {
        "api": FAST, "server": {"drain_timeout_s": 0.5},
        "webhooks": {"max_age_s": 1, "retry_initial_s": 0.1}},
        extra_toml=f'[[webhooks.endpoints]]\nname = "crm"\n'
                   f'url = "http://127.0.0.1:{port}/hooks"\nsecret_file = "{secret_file}"\n')
    receiver = Receiver()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(d, session)
            api.doc = (await api.call("GET", "/api/openapi.json", token=None)).body
            room = await new_room(api)
            name = room["name"]
            alice = await join(api, name, "alice")
            published = await alice.request({"type": "add_track", "cid": "cam", "kind": "video",
                                             "source": "camera"})
            await leave(alice)
            assert (await api.call("DELETE", f"/api/rooms/{name}", op="deleteRoom")).status \
                == 204
            other = (await new_room(api))["name"]  # another room's events fail as well
            expected = ["room_started", "participant_joined", "track_published",
                        "track_unpublished", "participant_left", "room_finished"]

            async def all_failed() -> list[dict[str, Any]] | None:
                reply = await api.call("GET", FAILED, op="listFailedWebhooks")
                rows = reply.body["deliveries"]
                return rows if len(rows) == len(expected) + 1 else None

            failed = await until(all_failed, timeout_s=20)
            mine = [f for f in failed if f["room"] == name]
            assert [f["event_type"] for f in mine] == expected
            assert mine[0]["attempts"] >= 2  # retried until max_age_s, then given up
            assert [f["event_type"] for f in failed if f["room"] == other] == ["room_started"]
            ids = [f["id"] for f in mine]
            assert ids == sorted(ids)
            for f in failed:
                assert f["endpoint"] == "crm" and f["attempts"] >= 1
                assert f["last_status"] is None  # nothing answered
                assert "cannot connect" in f["last_error"].lower(), f["last_error"]
                assert f["last_attempt_at"] >= f["event_created_at"]
            # filtered by room, a page at a time
            pages: list[int] = []
            cursor: int | None = None
            while True:
                reply = await api.call("GET", FAILED + qs(room_id=name, limit=4, cursor=cursor),
                                       op="listFailedWebhooks")
                pages += [f["id"] for f in reply.body["deliveries"]]
                cursor = reply.body["next_cursor"]
                if cursor is None:
                    break
            assert pages == ids

            # the endpoint comes back; replay two by id, then the rest of the room
            await receiver.start(port)
            reply = await api.call("POST", REPLAY, json_body={"ids": ids[:2]},
                                   op="replayFailedWebhooks")
            assert reply.body == {"replayed": 2}

            async def received(n: int) -> list[tuple[dict[str, str], bytes]] | None:
                await asyncio.sleep(0)
                return receiver.got if len(receiver.got) >= n else None

            await until(lambda: received(2))
            bound = admin_token(VideoGrant(room=name, room_admin=True))
            reply = await api.call("POST", REPLAY, json_body={"room_id": name}, token=bound,
                                   op="replayFailedWebhooks")
            assert reply.body == {"replayed": 4}
            await until(lambda: received(6))
            await asyncio.sleep(0.3)
            assert len(receiver.got) == 6  # the other room's failure was not replayed

            verifier = Webhook(secret)
            bodies = []
            for headers, body in receiver.got:
                payload = verifier.verify(body, headers)  # raises on a bad signature
                assert payload["id"] == headers["webhook-id"]
                assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
                assert headers["content-type"] == "application/json"
                bodies.append(payload)
            assert [b["type"] for b in bodies] == expected  # in order
            assert [b["id"] for b in bodies] == [f["event_id"] for f in mine]
            assert all(b["room"] == {"sid": room["sid"], "name": name} for b in bodies)
            by_type = {b["type"]: b for b in bodies}
            assert by_type["track_published"]["track"]["sid"] == published["track"]["sid"]
            left = by_type["participant_left"]
            assert (left["participant"]["identity"], left["reason"]) == \
                ("alice", "client_request")
            assert left["session"]["identity"] == "alice"
            assert left["session"]["session_id"] == left["session_id"]
            assert left["session"]["leave_reason"] == "client_request"
            assert by_type["room_finished"]["reason"] == "deleted"
            # a tampered body fails verification
            with pytest.raises(Exception, match="No matching signature found"):
                verifier.verify(receiver.got[0][1] + b" ", receiver.got[0][0])

            reply = await api.call("GET", FAILED + qs(room_id=name), op="listFailedWebhooks")
            assert reply.body == {"deliveries": [], "next_cursor": None}
            reply = await api.call("GET", FAILED, op="listFailedWebhooks")
            assert [f["room"] for f in reply.body["deliveries"]] == [other]
            # replaying everything: the rest; replaying again finds nothing
            reply = await api.call("POST", REPLAY, json_body={}, op="replayFailedWebhooks")
            assert reply.body == {"replayed": 1}
            await until(lambda: received(7))
            reply = await api.call("POST", REPLAY, json_body={}, op="replayFailedWebhooks")
            assert reply.body == {"replayed": 0}
    finally:
        await receiver.stop()
        stop_daemon(d)
