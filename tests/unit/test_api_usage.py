"""The store-backed routes' pure parts: which room a token may ask about, the time window,
pages, JSON Lines, and RFC 3339 times."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sfu.api.errors import ApiError
from sfu.api.times import parse_date_time, unix_time
from sfu.api.usage import jsonl, page, scoped_room, window
from signaling.auth import Claims, VideoGrant


def claims(room: str = "") -> Claims:
    return Claims(identity="backend", name="", metadata="", issuer="APIunit", key_id="",
                  expires_at=10_000.0, not_before=None,
                  grant=VideoGrant(room=room, room_admin=True))


def test_a_token_naming_no_room_may_ask_about_any_room_or_all() -> None:
    assert scoped_room(claims(), None) is None
    assert scoped_room(claims(), "sales") == "sales"
    assert scoped_room(claims(), "RM_abc") == "RM_abc"


def test_a_room_bound_token_must_name_its_room() -> None:
    assert scoped_room(claims("sales"), "sales") == "sales"
    with pytest.raises(ApiError) as e:
        scoped_room(claims("sales"), None)
    assert (e.value.status, e.value.code) == (403, "permission_denied")
    assert e.value.message == "token is limited to room 'sales': give room_id=sales"
    for other in ("support", "RM_abc"):  # another room, or a sid (even its own room's)
        with pytest.raises(ApiError) as e:
            scoped_room(claims("sales"), other)
        assert e.value.status == 403
        assert e.value.message == f"token is limited to room 'sales', not {other!r}"


@pytest.mark.parametrize(("query", "expected"), [
    ({}, (None, None)),
    ({"from": 100}, (100.0, None)),
    ({"to": 100.5}, (None, 100.5)),
    ({"from": 100, "to": 100}, (100.0, 100.0)),  # empty, but not backwards
    ({"from": "2026-11-23T18:00:00Z", "to": "2026-11-23T20:00:00+01:00"},
     (1795456800.0, 1795460400.0)),
])
def test_window(query: dict[str, Any], expected: tuple[float | None, float | None]) -> None:
    assert window(query) == expected


@pytest.mark.parametrize(("query", "message"), [
    ({"from": 101, "to": 100}, "query.from: 101 is after query.to: 100"),
    ({"from": "2026-11-23T18:00:00Z", "to": 1795456799.5},
     "query.from: '2026-11-23T18:00:00Z' (1795456800.000 unix s) is after query.to: "
     "1795456799.5"),
    ({"from": "2026-11-23T18:00:00Z", "to": "2026-11-23T18:00:00+00:01"},
     "query.from: '2026-11-23T18:00:00Z' (1795456800.000 unix s) is after query.to: "
     "'2026-11-23T18:00:00+00:01' (1795456740.000 unix s)"),
])
def test_a_backwards_window_is_422(query: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as e:
        window(query)
    assert (e.value.status, e.value.code, e.value.message) == (422, "invalid_request", message)


def test_page_and_its_cursor() -> None:
    rows = [{"id": i} for i in (3, 5, 9)]
    assert page(rows, 3, "id") == (rows, None)
    assert page(rows, 2, "id") == (rows[:2], 5)
    assert page([], 1, "id") == ([], None)


def test_jsonl_is_one_compact_object_per_line() -> None:
    records = [{"identity": "a", "n": 1}, {"identity": "\u00e9\n", "n": None}]
    text = jsonl(records).decode()
    assert text == '{"identity":"a","n":1}\n{"identity":"\\u00e9\\n","n":null}\n'
    assert [json.loads(line) for line in text.splitlines()] == records
    assert jsonl([]) == b""


@pytest.mark.parametrize(("text", "expected"), [
    ("1970-01-01T00:00:00Z", 0.0),
    ("2026-11-23T18:00:00Z", 1795456800.0),
    ("2026-11-23t18:00:00z", 1795456800.0),
    ("2026-11-23T19:30:00+01:30", 1795456800.0),
    ("2026-11-23T18:00:00.250-00:00", 1795456800.25),
    ("2016-12-31T23:59:60Z", 1483228800.0),  # a leap second: the next second
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC).timestamp()),
])
def test_rfc3339_date_times(text: str, expected: float) -> None:
    assert parse_date_time(text) == pytest.approx(expected, abs=1e-6)
    assert unix_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("text", "reason"), [
    ("2026-11-23", "expected unix seconds or an RFC 3339 date-time"),
    ("2026-11-23T18:00:00", "expected unix seconds or an RFC 3339 date-time"),  # no offset
    ("2026-11-23 18:00:00Z", "expected unix seconds or an RFC 3339 date-time"),
    ("2026-11-23T18:00Z", "expected unix seconds or an RFC 3339 date-time"),
    ("\u0662026-11-23T18:00:00Z", "expected unix seconds"),  # an Arabic-Indic digit
    ("2026-13-01T00:00:00Z", "month must be in 1..12"),
    ("2026-11-23T24:00:00Z", "hour must be in 0..23"),
    ("2026-11-23T18:00:00+24:00", "offset must be a timedelta strictly between"),
])
def test_not_rfc3339_date_times(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(")):
        parse_date_time(text)


def test_unix_seconds_pass_through() -> None:
    assert unix_time(0) == 0.0 and isinstance(unix_time(5), float)
    assert unix_time(1795456800.5) == 1795456800.5
