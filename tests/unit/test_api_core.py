"""The REST API's pure core: handlers over a real RoomService, roles, auth, rate limits."""

from __future__ import annotations

import random
import urllib.parse
from typing import Any

import pytest

from sfu.api.auth import api_key, bearer_token, check_room, require_any
from sfu.api.errors import ApiError, from_signaling
from sfu.api.ratelimit import KeyedRateLimiter
from sfu.api.roles import ROLES, grant_for
from sfu.api.routes import ApiCore, Call, join_url
from sfu.rooms import Permission, RoomError, RoomService
from signaling import errors as E
from signaling.auth import Claims, TokenVerifier, VideoGrant
from signaling.errors import AuthError
from signaling.messages import validate_server_message

KEY, SECRET = "APIunit", "u" * 40
ADMIN = VideoGrant(room_admin=True, room_create=True, room_list=True, room_record=True)


def claims(grant: VideoGrant = ADMIN, *, issuer: str = KEY, key_id: str = "") -> Claims:
    return Claims(identity="backend", name="", metadata="", issuer=issuer, key_id=key_id,
                  expires_at=10_000.0, not_before=None, grant=grant)


def core(**kw: Any) -> ApiCore:
    rooms = RoomService(auto_create=False, max_participants=0, empty_timeout_s=300,
                        resume_window_s=30, rng=random.Random(7))
    return ApiCore(rooms, minting_keys=kw.pop("minting_keys", {KEY: SECRET}),
                   join_base_url="https://meet.example.com", **kw)


def call(who: Claims | None = None, now: float = 1000.0, **kw: Any) -> Call:
    return Call(claims=who or claims(), now=now, **kw)


def join(c: ApiCore, room: str, identity: str, now: float = 1000.0) -> Any:
    p, _ = c.rooms.join(room, identity=identity, name="", metadata="",
                        permission=Permission(), now=now)
    return p


# -- rooms ---------------------------------------------------------------------------------------

def test_create_room_with_every_field_and_live_facts() -> None:
    c = core()
    r = c.create_room(call(body={"name": "sales", "type": "webinar", "max_participants": 20.0,
                                 "empty_timeout_s": 60, "waiting_room": True,
                                 "auto_record": True, "metadata": "m", "start_time": 5000}))
    assert r.status == 201 and r.headers == {"Location": "/api/rooms/sales"}
    assert r.body["max_participants"] == 20 and isinstance(r.body["max_participants"], int)
    assert (r.body["type"], r.body["waiting_room"], r.body["auto_record"]) == \
        ("webinar", True, True)
    assert (r.body["start_time"], r.body["started_at"], r.body["live_for_s"]) == \
        (5000, None, None)
    join(c, "sales", "a", now=1200.0)
    got = c.get_room(call(now=1260.5, path={"room": "sales"})).body
    assert (got["started_at"], got["live_for_s"], got["num_participants"]) == (1200.0, 60.5, 1)
    # the start is when the first joined, not when the latest did
    c.rooms.leave(c.rooms.rooms["sales"].participants["a"].session_id, "client_request", 1300)
    join(c, "sales", "b", now=1400.0)
    assert c.get_room(call(now=1500.0, path={"room": "sales"})).body["started_at"] == 1200.0


def test_scheduled_room_stays_until_its_start_time_plus_empty_timeout() -> None:
    c = core()
    c.create_room(call(now=1000.0, body={"name": "later", "empty_timeout_s": 60,
                                         "start_time": 5000.0}))
    c.create_room(call(now=1000.0, body={"name": "now", "empty_timeout_s": 60}))
    c.rooms.handle_timeout(1060.0)
    assert set(c.rooms.rooms) == {"later"}
    assert c.rooms.next_timeout() == 5060.0
    c.rooms.handle_timeout(5059.9)
    assert "later" in c.rooms.rooms
    c.rooms.handle_timeout(5060.0)
    assert "later" not in c.rooms.rooms


def test_generated_room_names_are_valid_and_distinct() -> None:
    c = core()
    names = {c.create_room(call(body={})).body["name"] for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("room-") and len(n) == 17 for n in names)


def test_room_bound_tokens() -> None:
    c = core()
    bound = claims(VideoGrant(room="mine", room_create=True, room_list=True, room_admin=True))
    assert c.create_room(call(bound, body={})).body["name"] == "mine"
    c.create_room(call(body={"name": "other"}))
    with pytest.raises(ApiError) as e:
        c.create_room(call(bound, body={"name": "other2"}))
    assert (e.value.status, e.value.code) == (403, "permission_denied")
    assert [r["name"] for r in c.list_rooms(call(bound)).body["rooms"]] == ["mine"]
    assert len(c.list_rooms(call()).body["rooms"]) == 2
    for handler in (c.get_room, c.delete_room, c.list_participants, c.participant_count):
        with pytest.raises(ApiError) as e:
            handler(call(bound, path={"room": "other"}))
        assert e.value.status == 403 and "limited to room 'mine'" in e.value.message
    with pytest.raises(ApiError):
        c.create_token(call(bound, body={"room": "other", "identity": "x"}))


def test_auto_record_needs_room_record() -> None:
    c = core()
    who = claims(VideoGrant(room_create=True))
    with pytest.raises(ApiError) as e:
        c.create_room(call(who, body={"name": "r", "auto_record": True}))
    assert e.value.status == 403 and "roomRecord" in e.value.message
    assert c.create_room(call(who, body={"name": "r", "auto_record": False})).status == 201


def test_errors_from_the_room_service_keep_their_codes() -> None:
    c = core()
    c.create_room(call(body={"name": "r"}))
    for fn, kw, status, code in (
            (c.create_room, {"body": {"name": "r"}}, 409, "room_exists"),
            (c.get_room, {"path": {"room": "x"}}, 404, "room_not_found"),
            (c.get_participant, {"path": {"room": "r", "identity": "x"}}, 404, "not_found"),
            (c.create_token, {"body": {"room": "x", "identity": "a"}}, 404, "room_not_found")):
        with pytest.raises(RoomError) as e:
            fn(call(**kw))
        err = from_signaling(e.value)
        assert (err.status, err.code) == (status, code)


# -- participants ----------------------------------------------------------------------------------

def test_participant_operations_return_the_room_services_messages() -> None:
    c = core(participant_media=lambda session: {"published": [], "subscribed": []}
             if session.startswith("SE_") else None)
    c.create_room(call(body={"name": "r"}))
    alice, bob = join(c, "r", "alice"), join(c, "r", "bob")
    track, _ = c.rooms.add_track(bob, cid="cam", kind="video", source="camera", now=0.0)
    path = {"room": "r", "identity": "bob"}

    listed = c.list_participants(call(path={"room": "r"})).body
    assert [p["identity"] for p in listed["participants"]] == ["alice", "bob"]
    assert listed["participants"][0]["media"] == {"published": [], "subscribed": []}
    assert c.participant_count(call(path={"room": "r"})).body == \
        {"room": "r", "count": 2, "total": 2}
    assert c.participant_exists(call(path=path)).body["exists"] is True
    assert c.participant_exists(call(path={**path, "identity": "zed"})).body["exists"] is False

    muted = c.mute_track(call(path={**path, "track_sid": track.sid}, body={"muted": True}))
    assert muted.body["muted"] is True
    assert {(o.session_id, o.msg["type"]) for o in muted.outs} == {
        (bob.session_id, "participant_updated"), (alice.session_id, "participant_updated")}
    assert "r" in c.rooms.dirty_rooms  # the media side learns of the mute
    again = c.mute_track(call(path={**path, "track_sid": track.sid}, body={"muted": True}))
    assert again.outs == []

    updated = c.update_participant(call(path=path, body={"permission": {"hidden": True}}))
    assert updated.body["permission"]["hidden"] is True
    assert [o.msg["type"] for o in updated.outs if o.session_id == alice.session_id] == \
        ["participant_left"]

    sent = c.send_data(call(path={"room": "r"}, body={"payload": "aGk=", "topic": "t",
                                                      "destination_identities": ["alice"]}))
    assert sent.body == {"recipients": 1}
    assert sent.outs[0].msg == {"type": "data", "payload": "aGk=", "kind": "reliable",
                                "from_identity": None, "topic": "t"}

    removed = c.remove_participant(call(path=path))
    assert removed.status == 204
    assert (removed.outs[0].session_id, removed.outs[0].msg["reason"], removed.outs[0].close) \
        == (bob.session_id, "participant_removed", 4010)
    assert "bob" not in c.rooms.rooms["r"].participants

    deleted = c.delete_room(call(path={"room": "r"}))
    assert [(o.session_id, o.msg["reason"]) for o in deleted.outs] == \
        [(alice.session_id, "room_deleted")]
    for out in (*muted.outs, *updated.outs, *sent.outs, *removed.outs, *deleted.outs):
        validate_server_message(out.msg)


# -- tokens --------------------------------------------------------------------------------------

@pytest.mark.parametrize("room_type", ["conference", "webinar"])
@pytest.mark.parametrize("role", ROLES)
def test_role_grants(role: str, room_type: str) -> None:
    g = grant_for(role, "r", room_type)
    assert g.room_join and g.room == "r" and g.can_subscribe and not g.hidden
    assert not (g.room_create or g.room_list or g.room_record)
    assert g.can_publish is (role == "moderator" or (role == "participant"
                                                     and room_type == "conference"))
    assert g.can_publish_data is (role != "viewer")
    assert g.can_update_own_metadata is (role != "viewer")
    assert g.room_admin is (role == "moderator")


def test_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'host'"):
        grant_for("host", "r", "conference")


def test_create_token_signs_with_the_callers_key() -> None:
    c = core(minting_keys={"first": "f" * 40, KEY: SECRET})
    c.create_room(call(body={"name": "r", "type": "webinar"}))
    r = c.create_token(call(now=1000.0, body={"room": "r", "identity": "ann", "role": "viewer",
                                              "ttl_s": 90.5, "name": "Ann"}))
    assert r.status == 201 and r.body["expires_at"] == 1090
    got = TokenVerifier({KEY: SECRET}).verify(r.body["token"], 1000.0)
    assert (got.identity, got.name, got.issuer, got.grant.can_publish) == \
        ("ann", "Ann", KEY, False)
    assert r.body["grant"]["room"] == "r" and r.body["grant"]["can_publish_data"] is False
    # a caller whose key cannot sign (an RS256 token): the first HS256 key signs
    rs = c.create_token(call(claims(issuer="", key_id="issuer"),
                             body={"room": "r", "identity": "bob"}))
    assert TokenVerifier({"first": "f" * 40}).verify(rs.body["token"], 1000.0).issuer == "first"
    assert rs.body["role"] == "participant"


def test_create_token_without_an_hmac_key_is_501() -> None:
    c = core(minting_keys={})
    c.create_room(call(body={"name": "r"}))
    with pytest.raises(ApiError) as e:
        c.create_token(call(body={"room": "r", "identity": "x"}))
    assert (e.value.status, e.value.code) == (501, "not_implemented")


@pytest.mark.parametrize(("base", "room", "expected_prefix"), [
    ("https://meet.example.com", "sales", "https://meet.example.com/call/?roomId=sales&token="),
    ("https://meet.example.com/", "a.b", "https://meet.example.com/call/?roomId=a.b&token="),
    ("http://[::1]:7880/app", "r", "http://[::1]:7880/app/call/?roomId=r&token="),
])
def test_join_url(base: str, room: str, expected_prefix: str) -> None:
    url = join_url(base, room, "e.y.J")
    assert url == expected_prefix + "e.y.J"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query == {"roomId": [room], "token": ["e.y.J"]}


# -- auth and rate limits --------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER x.y.z", "x.y.z")])
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcg==", "abc"])
def test_bearer_token_missing(header: str | None) -> None:
    with pytest.raises(AuthError) as e:
        bearer_token(header)
    assert e.value.code == E.TOKEN_MISSING
    err = from_signaling(e.value)
    assert err.status == 401 and err.headers["WWW-Authenticate"] == 'Bearer realm="sfu"'


def test_bad_tokens_get_an_invalid_token_challenge() -> None:
    err = from_signaling(AuthError(E.TOKEN_EXPIRED, "token has expired"))
    assert (err.status, err.code) == (401, "token_expired")
    assert err.headers["WWW-Authenticate"] == 'Bearer realm="sfu", error="invalid_token"'


def test_grants_and_rooms() -> None:
    require_any(claims(VideoGrant(room_list=True)), ("room_list", "room_admin"))
    with pytest.raises(ApiError) as e:
        require_any(claims(VideoGrant(room_join=True, room="r")), ("room_list", "room_admin"))
    assert e.value.message == "token does not grant roomList or roomAdmin"
    check_room(claims(VideoGrant(room_admin=True)), "any")
    check_room(claims(VideoGrant(room="r", room_admin=True)), "r")
    with pytest.raises(ApiError):
        check_room(claims(VideoGrant(room="r", room_admin=True)), "s")
    assert api_key(claims()) == "iss:APIunit"
    assert api_key(claims(issuer="x", key_id="k1")) == "kid:k1"


def test_unexpected_room_service_code_is_a_500() -> None:
    err = from_signaling(RoomError(E.RESUME_FAILED, "?"))
    assert (err.status, err.code) == (500, "internal_error")


def test_rate_limiter_per_key_with_retry_after() -> None:
    rl = KeyedRateLimiter(rate_per_s=2.0, burst=3)
    assert [rl.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a", 0.0) == pytest.approx(0.5)
    assert rl.take("b", 0.0) == 0.0  # keys do not share a bucket
    assert rl.take("a", 0.25) == pytest.approx(0.25)  # refused requests cost nothing
    assert rl.take("a", 0.5) == 0.0
    assert rl.take("a", 0.5) == pytest.approx(0.5)
    assert [rl.take("a", 100.0) for _ in range(4)][-1] > 0  # refills to the burst, no more
    with pytest.raises(ValueError):
        KeyedRateLimiter(0, 1)
