"""The store-backed routes: participant sessions' usage records (call-detail records) and
the webhook outbox's failed deliveries.

Handlers are :class:`UsageApi` methods: asynchronous only because they await the store
(reads on its reader thread, writes through its writer thread); what they decide — which
room a token may ask about, the time window — is in the pure functions above them. Reads see
every committed write; a participant who left a moment ago is in the answer once the
store's writer has committed the event (it batches, so within milliseconds).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any, Final

from sfu.api import errors as AE
from sfu.api.auth import check_room
from sfu.api.errors import ApiError
from sfu.api.schemas import PAGE_LIMIT_DEFAULT
from sfu.api.table import Call, Result, Stream
from sfu.api.times import unix_time
from sfu.store import outbox, queries
from sfu.store.writer import StoreWriter
from signaling.auth import Claims

#: sessions per store read while streaming the JSON Lines export
EXPORT_PAGE: Final = 1000
JSONL: Final = "application/jsonl"


def scoped_room(who: Claims, room_id: str | None) -> str | None:
    """The room a query is limited to: ``room_id`` (None: every room). A token whose grant
    names a room must name that room (403 otherwise)."""
    bound = who.grant.room
    if bound and room_id is None:
        raise ApiError(403, AE.PERMISSION_DENIED,
                       f"token is limited to room {bound!r}: give room_id={bound}")
    if room_id is not None:
        check_room(who, room_id)
    return room_id


def window(query: dict[str, Any]) -> tuple[float | None, float | None]:
    """The ``[from, to)`` window of a validated query, in unix seconds (None: unbounded);
    422 when it ends before it starts."""
    start = None if "from" not in query else unix_time(query["from"])
    end = None if "to" not in query else unix_time(query["to"])
    if start is not None and end is not None and start > end:
        raise ApiError(422, AE.INVALID_REQUEST,
                       f"query.from: {_shown(query['from'], start)} is after query.to: "
                       f"{_shown(query['to'], end)}")
    return start, end


def _shown(value: float | str, seconds: float) -> str:
    return f"{value!r} ({seconds:.3f} unix s)" if isinstance(value, str) else repr(value)


def page(rows: list[dict[str, Any]], limit: int, key: str) -> tuple[list[dict[str, Any]],
                                                                    int | None]:
    """At most ``limit`` of ``rows`` (read with ``limit + 1``), and the next page's cursor:
    the last row's ``key``, when there are more."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, int(rows[-1][key])


def jsonl(records: list[dict[str, Any]]) -> bytes:
    """JSON Lines: one compact JSON object per line."""
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()


class UsageApi:
    """The store-backed operations; ``store`` is None when the server keeps no store
    (every route answers 503 ``store_unavailable``)."""

    def __init__(self, store: StoreWriter | None) -> None:
        self.store = store

    def _store(self) -> StoreWriter:
        if self.store is None:
            raise ApiError(503, AE.STORE_UNAVAILABLE,
                           "this server keeps no store: usage records and webhook "
                           "deliveries are unavailable")
        return self.store

    # -- usage records -------------------------------------------------------------------
    async def list_sessions(self, call: Call) -> Result:
        room = scoped_room(call.who, call.query.get("room_id"))
        start, end = window(call.query)
        limit: int = call.query.get("limit", PAGE_LIMIT_DEFAULT)
        after: int = call.query.get("cursor", 0)
        records, cursor = await self._store().read(lambda c: queries.sessions(
            c, room=room, start=start, end=end, limit=limit, after=after,
            match_sid=not call.who.grant.room))
        return Result(200, {"sessions": records, "next_cursor": cursor})

    async def summary(self, call: Call) -> Result:
        room = scoped_room(call.who, call.query.get("room_id"))
        start, end = window(call.query)
        now = call.now
        return Result(200, await self._store().read(
            lambda c: queries.summary(c, now, room=room, start=start, end=end,
                                      match_sid=not call.who.grant.room)))

    async def export_sessions(self, call: Call) -> Stream:
        room = scoped_room(call.who, call.query.get("room_id"))
        start, end = window(call.query)
        store = self._store()

        async def read(after: int) -> tuple[list[dict[str, Any]], int | None]:
            return await store.read(lambda c: queries.sessions(
                c, room=room, start=start, end=end, limit=EXPORT_PAGE, after=after,
                match_sid=not call.who.grant.room))

        first = await read(0)  # before the headers: a failing store still answers an error

        async def chunks() -> AsyncGenerator[bytes, None]:
            records, cursor = first
            while True:
                if records:
                    yield jsonl(records)
                if cursor is None:
                    return
                records, cursor = await read(cursor)

        return Stream(200, JSONL, chunks())

    # -- webhooks ------------------------------------------------------------------------
    async def list_failed(self, call: Call) -> Result:
        room = scoped_room(call.who, call.query.get("room_id"))
        limit: int = call.query.get("limit", PAGE_LIMIT_DEFAULT)
        after: int = call.query.get("cursor", 0)
        rows = await self._store().read(
            lambda c: outbox.failed(c, room=room, limit=limit + 1, after=after))
        deliveries, cursor = page(rows, limit, "id")
        return Result(200, {"deliveries": deliveries, "next_cursor": cursor})

    async def replay_failed(self, call: Call) -> Result:
        body = call.body or {}
        room = scoped_room(call.who, body.get("room_id"))
        ids: list[int] | None = body.get("ids")
        now = call.now
        replayed = await self._store().run(
            lambda c: outbox.replay(c, now, ids=ids, room=room), notify=True)
        return Result(200, {"replayed": replayed})
