"""RoomService: pure room state driven by an injected clock."""

from __future__ import annotations

import random

import pytest

from sfu.rooms import Permission, RoomError, RoomService
from signaling.messages import validate_server_message


def svc(**kw: object) -> RoomService:
    args: dict[str, object] = dict(auto_create=True, max_participants=0, empty_timeout_s=10,
                                   resume_window_s=5, rng=random.Random(1))
    args.update(kw)
    return RoomService(**args)  # type: ignore[arg-type]


def join(s: RoomService, identity: str, now: float = 0.0, room: str = "r", hidden: bool = False):  # type: ignore[no-untyped-def]
    return s.join(room, identity=identity, name=identity.title(), metadata="",
                  permission=Permission(hidden=hidden), now=now)


def types(outs) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    for o in outs:
        validate_server_message(o.msg)
    return [(o.session_id, o.msg["type"]) for o in outs]


def test_join_announces_to_others_only() -> None:
    s = svc()
    a, outs = join(s, "a")
    assert outs == []
    b, outs = join(s, "b")
    assert types(outs) == [(a.session_id, "participant_joined")]
    msg = s.join_message(b, resumed=False)
    assert [p["identity"] for p in msg["other_participants"]] == ["a"]


def test_duplicate_identity() -> None:
    s = svc()
    a, _ = join(s, "a")
    old, _ = join(s, "dup")
    new, outs = join(s, "dup")
    assert types(outs) == [(old.session_id, "leave"), (a.session_id, "participant_left"),
                           (a.session_id, "participant_joined")]
    assert outs[0].msg["reason"] == "duplicate_identity" and outs[0].close == 4010
    assert s.participant(new.session_id) is new
    with pytest.raises(RoomError) as e:
        s.participant(old.session_id)
    assert e.value.code == "not_joined"


def test_hidden_not_announced_and_not_counted() -> None:
    s = svc(max_participants=1)
    a, _ = join(s, "a")
    h, outs = join(s, "h", hidden=True)
    assert outs == []
    assert s.rooms["r"].to_wire()["num_participants"] == 1
    with pytest.raises(RoomError) as e:
        join(s, "b")
    assert e.value.code == "room_full"
    assert s.leave(h.session_id, "client_request", 1) == []


def test_resume_window_and_empty_timeout() -> None:
    s = svc()
    a, _ = join(s, "a", now=0)
    b, _ = join(s, "b", now=0)
    s.disconnect(b.session_id, now=10)
    assert s.next_timeout() == 15
    assert s.handle_timeout(14.9) == []
    outs = s.handle_timeout(15)
    assert types(outs) == [(a.session_id, "participant_left")]
    assert outs[0].msg["reason"] == "resume_window_expired"
    s.leave(a.session_id, "client_request", 20)
    assert s.next_timeout() == 30
    s.handle_timeout(29.9)
    assert "r" in s.rooms
    s.handle_timeout(30)
    assert "r" not in s.rooms


def test_resume_checks_identity_and_room() -> None:
    s = svc()
    a, _ = join(s, "a")
    s.disconnect(a.session_id, 1)
    for ident, room in (("x", "r"), ("a", "other")):
        with pytest.raises(RoomError) as e:
            s.resume(a.session_id, identity=ident, room_name=room)
        assert e.value.code == "resume_failed"
    assert s.resume(a.session_id, identity="a", room_name="r") is a
    assert s.handle_timeout(100) == []  # connected again: never expires


def test_room_not_found_without_auto_create() -> None:
    s = svc(auto_create=False)
    with pytest.raises(RoomError) as e:
        join(s, "a")
    assert e.value.code == "room_not_found"
    s.create_room("r", 0)
    join(s, "a")


def test_permission_update_hides_and_unhides() -> None:
    s = svc()
    a, _ = join(s, "a")
    b, _ = join(s, "b")
    outs = s.update_participant(b, permission={"hidden": True})
    assert types(outs) == [(b.session_id, "participant_updated"), (a.session_id, "participant_left")]
    outs = s.update_participant(b, permission={"hidden": False, "can_publish_sources": ["camera"]})
    assert types(outs) == [(b.session_id, "participant_updated"), (a.session_id, "participant_joined")]
    assert b.permission.can_publish_sources == ("camera",)
