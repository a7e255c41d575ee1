"""Signaling against a real daemon with real websockets clients.

Every message the server sends is validated against its JSON Schema by the test client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from signaling.auth import TokenVerifier, VideoGrant, mint_token
from signaling.messages import validate_server_message
from tests.conftest import API_KEY, API_SECRET, Daemon, start_daemon, stop_daemon

pytestmark = pytest.mark.timeout(60)


class Client:
    """A websockets client that validates what it receives and keeps a backlog by type."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> Client:
        return cls(await websockets.connect(url, **kwargs))

    async def send(self, msg: dict[str, Any] | str) -> None:
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        validate_server_message(msg)
        self.seen.append(msg)
        return msg  # type: ignore[no-any-return]

    async def expect(self, mtype: str, timeout: float = 5, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - time.monotonic()))
            if msg["type"] == mtype and all(msg.get(k) == v for k, v in fields.items()):
                return msg

    async def request(self, msg: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
        rid = f"r{time.monotonic_ns()}"
        await self.send({**msg, "id": rid})
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.recv(max(0.01, deadline - time.monotonic()))
            if reply.get("id") == rid:
                return reply

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Everything received during ``seconds``."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got

    async def closed_code(self, timeout: float = 5) -> int | None:
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        await self.ws.close()


async def join(d: Daemon, identity: str, room: str = "room1", **grant: Any) -> tuple[Client, dict[str, Any]]:
    c = await Client.connect(f"{d.ws}?access_token={d.token(identity, room, **grant)}")
    return c, await c.expect("join")


@pytest.fixture
async def sd(tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await asyncio.to_thread(start_daemon, tmp_path, {
        "room": {"empty_timeout_s": 2.0},
        "signaling": {"resume_window_s": 2.0, "rate_limit_per_s": 20.0,
                      "rate_limit_burst": 20, "max_message_bytes": 4096,
                      "token_refresh_before_s": 10.0},
    })
    yield d
    await asyncio.to_thread(stop_daemon, d)


# -- tokens ----------------------------------------------------------------------------------

def _rsa_pem() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pub


def _claims(identity: str = "mallory", room: str = "room1", *, exp_in: float = 600,
            nbf_in: float = 0, **video: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": API_KEY, "sub": identity, "exp": now + exp_in, "nbf": now + nbf_in,
            "video": {"roomJoin": True, "room": room, **video}}


def _none_token(payload: dict[str, Any]) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


REJECTIONS: list[tuple[str, Any, str]] = [
    ("malformed", lambda: "not-a-jwt", "token_malformed"),
    ("bad_signature", lambda: jwt.encode(_claims(), "x" * 48, algorithm="HS256"),
     "token_bad_signature"),
    ("alg_none", lambda: _none_token(_claims()), "token_alg_not_allowed"),
    ("alg_hs384", lambda: jwt.encode(_claims(), API_SECRET, algorithm="HS384"),
     "token_alg_not_allowed"),
    ("alg_rs256_for_hmac_key", lambda: jwt.encode(_claims(), _rsa_pem()[0], algorithm="RS256"),
     "token_alg_not_allowed"),
    ("unknown_key", lambda: jwt.encode({**_claims(), "iss": "APInope"}, API_SECRET,
                                       algorithm="HS256"), "token_unknown_key"),
    ("expired", lambda: jwt.encode(_claims(exp_in=-120), API_SECRET, algorithm="HS256"),
     "token_expired"),
    ("not_yet_valid", lambda: jwt.encode(_claims(nbf_in=600), API_SECRET, algorithm="HS256"),
     "token_not_yet_valid"),
    ("missing_room_join", lambda: jwt.encode({**_claims(), "video": {"room": "room1"}},
                                             API_SECRET, algorithm="HS256"),
     "token_missing_room_join"),
    ("missing_exp", lambda: jwt.encode({k: v for k, v in _claims().items() if k != "exp"},
                                       API_SECRET, algorithm="HS256"), "token_malformed"),
]


@pytest.mark.parametrize(("token_fn", "code"), [(f, c) for _, f, c in REJECTIONS],
                         ids=[n for n, _, _ in REJECTIONS])
async def test_token_rejections(sd: Daemon, token_fn: Any, code: str) -> None:
    c = await Client.connect(f"{sd.ws}?access_token={token_fn()}")
    err = await c.expect("error")
    assert err["code"] == code, err
    assert await c.closed_code() == 4001


async def test_token_wrong_room_and_missing(sd: Daemon) -> None:
    c = await Client.connect(f"{sd.ws}?access_token={sd.token('a', 'room1')}&room=room2")
    assert (await c.expect("error"))["code"] == "token_wrong_room"
    assert await c.closed_code() == 4001
    c = await Client.connect(sd.ws)
    assert (await c.expect("error"))["code"] == "token_missing"
    assert await c.closed_code() == 4001


async def test_bearer_header_accepted(sd: Daemon) -> None:
    c = await Client.connect(sd.ws, additional_headers={
        "Authorization": f"Bearer {sd.token('hdr')}"})
    assert (await c.expect("join"))["participant"]["identity"] == "hdr"
    await c.close()


async def test_rs256_token_by_kid(tmp_path: Path) -> None:
    key, pub = _rsa_pem()
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(pub)
    cfg_extra = tmp_path / "extra"
    cfg_extra.mkdir()
    d = await asyncio.to_thread(start_daemon, cfg_extra)
    try:
        # the daemon under test only knows HMAC keys: an RS256 token with a kid is unknown
        tok = jwt.encode(_claims("rsa-user"), key, algorithm="RS256", headers={"kid": "k1"})
        c = await Client.connect(f"{d.ws}?access_token={tok}")
        assert (await c.expect("error"))["code"] in {"token_unknown_key", "token_alg_not_allowed"}
    finally:
        await asyncio.to_thread(stop_daemon, d)
    # a verifier configured with the public key accepts it (unit-level check of the same path)
    v = TokenVerifier({}, {"k1": ("RS256", pub)}, leeway_s=5)
    assert v.verify(tok, time.time()).identity == "rsa-user"


# -- rooms and participants -------------------------------------------------------------------

async def test_two_participants_see_join_and_leave(sd: Daemon) -> None:
    alice, ja = await join(sd, "alice")
    assert ja["other_participants"] == []
    assert ja["room"]["name"] == "room1" and ja["session_id"]
    bob, jb = await join(sd, "bob")
    assert [p["identity"] for p in jb["other_participants"]] == ["alice"]
    pj = await alice.expect("participant_joined")
    assert pj["participant"]["identity"] == "bob"
    await bob.send({"type": "leave"})
    left = await bob.expect("leave")
    assert left["reason"] == "client_request"
    gone = await alice.expect("participant_left")
    assert gone["identity"] == "bob" and gone["reason"] == "client_request"
    await alice.close()


async def test_duplicate_identity_replaces_first(sd: Daemon) -> None:
    first, j1 = await join(sd, "dup")
    watcher, _ = await join(sd, "watcher")
    second, j2 = await join(sd, "dup")
    leave = await first.expect("leave")
    assert leave["reason"] == "duplicate_identity"
    assert await first.closed_code() == 4010
    left = await watcher.expect("participant_left")
    assert left["participant_sid"] == j1["participant"]["sid"]
    assert left["reason"] == "duplicate_identity"
    joined = await watcher.expect("participant_joined")
    assert joined["participant"]["sid"] == j2["participant"]["sid"]
    assert (await second.request({"type": "ping"}))["type"] == "pong"


async def test_hidden_participant_is_not_announced(sd: Daemon) -> None:
    alice, _ = await join(sd, "alice")
    ghost, jg = await join(sd, "ghost", hidden=True)
    assert [p["identity"] for p in jg["other_participants"]] == ["alice"]
    bob, jb = await join(sd, "bob")
    assert [p["identity"] for p in jb["other_participants"]] == ["alice"]
    msgs = await alice.quiet(0.5)
    assert [m["participant"]["identity"] for m in msgs if m["type"] == "participant_joined"] == ["bob"]
    await ghost.send({"type": "leave"})
    await ghost.expect("leave")
    assert not [m for m in await alice.quiet(0.5) if m["type"] == "participant_left"]
    # an admin sees hidden participants
    admin = await Client.connect(f"{sd.ws}?access_token={sd.token('ops', 'room1', room_join=False, room_admin=True)}")
    await admin.expect("control_ready")
    await join(sd, "ghost2", hidden=True)
    lst = await admin.request({"type": "list_participants"})
    hidden = {p["identity"]: p["is_hidden"] for p in lst["participants"]}
    assert hidden == {"alice": False, "bob": False, "ghost2": True}


async def test_max_participants(sd: Daemon) -> None:
    ops = await Client.connect(f"{sd.ws}?access_token={sd.token('ops', '', room_join=False, room_create=True)}")
    await ops.expect("control_ready")
    created = await ops.request({"type": "create_room", "name": "small", "max_participants": 2})
    assert created["type"] == "room_created" and created["room"]["max_participants"] == 2
    await join(sd, "a", "small")
    await join(sd, "b", "small")
    c = await Client.connect(f"{sd.ws}?access_token={sd.token('c', 'small')}")
    assert (await c.expect("error"))["code"] == "room_full"
    assert await c.closed_code() == 4003
    # hidden participants do not count
    await join(sd, "recorder", "small", hidden=True)


async def test_empty_timeout_closes_room(sd: Daemon) -> None:
    ops = await Client.connect(f"{sd.ws}?access_token={sd.token('ops', '', room_join=False, room_create=True, room_list=True)}")
    await ops.expect("control_ready")
    await ops.request({"type": "create_room", "name": "ephemeral", "empty_timeout_s": 1})
    a, _ = await join(sd, "a", "ephemeral")
    await asyncio.sleep(1.5)
    names = [r["name"] for r in (await ops.request({"type": "list_rooms"}))["rooms"]]
    assert "ephemeral" in names  # occupied rooms never time out
    await a.send({"type": "leave"})
    await a.expect("leave")
    await asyncio.sleep(0.4)
    assert "ephemeral" in [r["name"] for r in (await ops.request({"type": "list_rooms"}))["rooms"]]
    await asyncio.sleep(1.2)
    assert "ephemeral" not in [r["name"] for r in (await ops.request({"type": "list_rooms"}))["rooms"]]


async def test_admin_create_list_delete_remove(sd: Daemon) -> None:
    admin_tok = sd.token("ops", "", room_join=False, room_admin=True, room_create=True,
                         room_list=True)
    ops = await Client.connect(f"{sd.ws}?access_token={admin_tok}")
    ready = await ops.expect("control_ready")
    assert ready["grants"]["room_create"] is True
    await ops.request({"type": "create_room", "name": "board", "metadata": "q3"})
    dup = await ops.request({"type": "create_room", "name": "board"})
    assert dup["type"] == "error" and dup["code"] == "room_exists"
    listed = await ops.request({"type": "list_rooms", "names": ["board"]})
    assert [(r["name"], r["metadata"]) for r in listed["rooms"]] == [("board", "q3")]

    alice, _ = await join(sd, "alice", "board")
    bob, _ = await join(sd, "bob", "board")
    parts = await ops.request({"type": "list_participants", "room": "board"})
    assert sorted(p["identity"] for p in parts["participants"]) == ["alice", "bob"]

    ack = await ops.request({"type": "remove_participant", "room": "board", "identity": "bob"})
    assert ack == {"type": "ack", "request": "remove_participant", "id": ack["id"]}
    assert (await bob.expect("leave"))["reason"] == "participant_removed"
    assert (await alice.expect("participant_left"))["identity"] == "bob"
    missing = await ops.request({"type": "remove_participant", "room": "board", "identity": "bob"})
    assert missing["code"] == "not_found"

    upd = await ops.request({"type": "update_participant", "room": "board", "identity": "alice",
                             "metadata": "vip", "permission": {"can_publish": False}})
    assert upd["type"] == "ack"
    me = await alice.expect("participant_updated")
    assert me["participant"]["metadata"] == "vip"
    assert me["participant"]["permission"]["can_publish"] is False

    sent = await ops.request({"type": "send_data", "room": "board", "payload": "aGk=",
                              "topic": "chat"})
    assert sent["type"] == "ack"
    data = await alice.expect("data")
    assert data["payload"] == "aGk=" and data["topic"] == "chat"

    await ops.request({"type": "delete_room", "room": "board"})
    assert (await alice.expect("leave"))["reason"] == "room_deleted"
    listed = await ops.request({"type": "list_rooms"})
    assert "board" not in [r["name"] for r in listed["rooms"]]
    gone = await ops.request({"type": "delete_room", "room": "board"})
    assert gone["code"] == "room_not_found"


async def test_admin_limited_to_its_room(sd: Daemon) -> None:
    ops = await Client.connect(f"{sd.ws}?access_token={sd.token('ops', 'room1', room_join=False, room_admin=True)}")
    await ops.expect("control_ready")
    await join(sd, "x", "room2")
    err = await ops.request({"type": "list_participants", "room": "room2"})
    assert err["code"] == "permission_denied"


@pytest.mark.parametrize("msg", [
    {"type": "list_participants"},
    {"type": "remove_participant", "identity": "alice"},
    {"type": "mute_published_track", "identity": "alice", "track_sid": "TR_x", "muted": True},
    {"type": "update_participant", "identity": "alice", "metadata": "x"},
    {"type": "send_data", "payload": "aGk="},
    {"type": "create_room", "name": "nope"},
    {"type": "list_rooms"},
    {"type": "delete_room", "room": "room1"},
    {"type": "update_metadata", "metadata": "me"},
], ids=lambda m: m["type"])
async def test_non_admin_permission_denied(sd: Daemon, msg: dict[str, Any]) -> None:
    alice, _ = await join(sd, "alice")
    reply = await alice.request(msg)
    assert reply["type"] == "error" and reply["code"] == "permission_denied", reply


async def test_publish_permissions(sd: Daemon) -> None:
    viewer, _ = await join(sd, "viewer", can_publish=False, can_subscribe=True)
    r = await viewer.request({"type": "add_track", "cid": "c1", "kind": "video", "source": "camera"})
    assert r["code"] == "permission_denied"
    cam_only, _ = await join(sd, "cam", can_publish_sources=("camera",))
    r = await cam_only.request({"type": "add_track", "cid": "s1", "kind": "video",
                                "source": "screen_share"})
    assert r["code"] == "permission_denied"
    r = await cam_only.request({"type": "add_track", "cid": "c1", "kind": "video",
                                "source": "camera", "width": 1280, "height": 720})
    assert r["type"] == "track_published" and r["cid"] == "c1"
    other = await viewer.expect("track_published")
    assert other["track"]["sid"] == r["track"]["sid"] and "cid" not in other
    # mute is announced to others
    await cam_only.request({"type": "mute", "track_sid": r["track"]["sid"], "muted": True})
    upd = await viewer.expect("participant_updated")
    assert upd["participant"]["tracks"][0]["muted"] is True
    # an admin mutes cam's track: cam and the others are told
    ops = await Client.connect(f"{sd.ws}?access_token={sd.token('ops', 'room1', room_join=False, room_admin=True)}")
    await ops.expect("control_ready")
    unmute = await ops.request({"type": "mute_published_track", "identity": "cam",
                                "track_sid": r["track"]["sid"], "muted": False})
    assert unmute["type"] == "ack"
    for c in (cam_only, viewer):
        while True:
            upd = await c.expect("participant_updated")
            if upd["participant"]["tracks"][0]["muted"] is False:
                break
    no_sub, _ = await join(sd, "nosub", can_subscribe=False)
    r = await no_sub.request({"type": "subscription", "track_sids": ["TR_x"], "subscribe": True})
    assert r["code"] == "permission_denied"


# -- resume -----------------------------------------------------------------------------------

async def test_resume_within_window_and_expiry_after(sd: Daemon) -> None:
    alice, _ = await join(sd, "alice")
    bob, jb = await join(sd, "bob")
    await alice.expect("participant_joined")
    sid = jb["session_id"]

    bob.ws.transport.abort()  # the network drops: no close frame
    assert not [m for m in await alice.quiet(1.0) if m["type"] == "participant_left"]
    bob3 = await Client.connect(f"{sd.ws}?access_token={sd.token('bob')}&resume={sid}")
    j3 = await bob3.expect("join")
    assert j3["resumed"] is True and j3["session_id"] == sid
    assert j3["participant"]["sid"] == jb["participant"]["sid"]
    assert [p["identity"] for p in j3["other_participants"]] == ["alice"]
    assert not [m for m in await alice.quiet(1.0)
                if m["type"] in ("participant_left", "participant_joined")]
    assert (await bob3.request({"type": "ping"}))["type"] == "pong"

    # after the window the participant is gone
    bob3.ws.transport.abort()
    left = await alice.expect("participant_left", timeout=5)
    assert left["identity"] == "bob" and left["reason"] == "resume_window_expired"
    late = await Client.connect(f"{sd.ws}?access_token={sd.token('bob')}&resume={sid}")
    assert (await late.expect("error"))["code"] == "resume_failed"
    assert await late.closed_code() == 4003


async def test_resume_needs_same_identity(sd: Daemon) -> None:
    alice, ja = await join(sd, "alice")
    alice.ws.transport.abort()
    thief = await Client.connect(f"{sd.ws}?access_token={sd.token('mallory')}&resume={ja['session_id']}")
    assert (await thief.expect("error"))["code"] == "resume_failed"


async def test_token_refresh_pushed_before_expiry(sd: Daemon) -> None:
    c = await Client.connect(f"{sd.ws}?access_token={sd.token('short', ttl_s=12)}")
    await c.expect("join")
    refresh = await c.expect("token_refresh", timeout=5)
    claims = TokenVerifier({API_KEY: API_SECRET}).verify(refresh["token"], time.time())
    assert claims.identity == "short" and claims.grant.room == "room1"
    assert claims.expires_at > time.time() + 3600


# -- bad input --------------------------------------------------------------------------------

async def test_bad_input_errors_and_others_unaffected(sd: Daemon) -> None:
    alice, _ = await join(sd, "alice")
    bob, _ = await join(sd, "bob")
    await alice.send("{not json")
    assert (await alice.expect("error"))["code"] == "malformed_message"
    await alice.send("[1, 2]")
    assert (await alice.expect("error"))["code"] == "malformed_message"
    await alice.send({"type": "launch_missiles", "id": 7})
    err = await alice.expect("error")
    assert err["code"] == "unknown_type" and err["id"] == 7
    await alice.send({"type": "offer", "target": "sideways", "sdp": "v=0", "id": "x"})
    err = await alice.expect("error")
    assert err["code"] == "invalid_message" and "target" in err["message"] and err["id"] == "x"
    await alice.send({"type": "ping", "extra": 1})
    assert (await alice.expect("error"))["code"] == "invalid_message"
    # still connected after all of that
    assert (await alice.request({"type": "ping"}))["type"] == "pong"
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_oversized_frame_closes_with_1009(sd: Daemon) -> None:
    alice, _ = await join(sd, "alice")
    bob, _ = await join(sd, "bob")
    await alice.send({"type": "update_metadata", "metadata": "x" * 8192})
    assert await alice.closed_code() == 1009
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_flood_is_rate_limited_then_closed(sd: Daemon) -> None:
    alice, _ = await join(sd, "alice")
    bob, _ = await join(sd, "bob")
    for i in range(200):
        await alice.send({"type": "ping", "id": i})
    codes = []
    try:
        while True:
            m = await alice.recv(5)
            if m["type"] == "error":
                codes.append(m["code"])
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 4008
    assert "rate_limited" in codes
    assert (await bob.request({"type": "ping"}))["type"] == "pong"


async def test_bad_sdp_is_invalid_message(sd: Daemon) -> None:
    alice, _ = await join(sd, "alice")
    offer = await alice.expect("offer")  # the subscriber transport's first offer
    assert offer["target"] == "subscriber" and "m=application" in offer["sdp"]
    r = await alice.request({"type": "offer", "target": "publisher", "sdp": "v=0\r\n"})
    assert r["code"] == "invalid_message" and "offer.sdp" in r["message"]
    r = await alice.request({"type": "offer", "target": "subscriber", "sdp": "v=0\r\n"})
    assert r["code"] == "invalid_message"
    r = await alice.request({"type": "answer", "target": "subscriber", "sdp": "garbage"})
    assert r["code"] == "invalid_message" and "answer.sdp" in r["message"]
    assert (await alice.request({"type": "ping"}))["type"] == "pong"


def test_mint_token_round_trip_matches_daemon_key() -> None:
    tok = mint_token(API_KEY, API_SECRET, identity="x", now=time.time(), ttl_s=60,
                     grant=VideoGrant(room_join=True, room="r"))
    assert TokenVerifier({API_KEY: API_SECRET}).verify(tok, time.time()).grant.room == "r"
