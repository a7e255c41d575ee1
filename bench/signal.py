"""The bench clients' signaling: our JSON-over-WebSocket protocol (docs/protocol.md).

One reader task per connection. Replies are matched to requests by ``id``; every other
server message goes to ``on_message`` synchronously (a handler that needs to await spawns
its own task). Nothing is validated against the schemas here: the bench trusts the server
and spends its CPU on media.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from .transport import BenchError

__all__ = ["SignalingClient"]

Message = dict[str, Any]


class SignalingClient:
    def __init__(self, url: str, token: str, name: str,
                 on_message: Callable[[Message], None] | None = None) -> None:
        self.url = url
        self.token = token
        self.name = name
        self.on_message = on_message
        self.join: Message = {}
        self.errors: list[Message] = []
        self.closed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Message]] = {}
        self._waiters: list[tuple[Callable[[Message], bool], asyncio.Future[Message]]] = []

    async def connect(self, timeout_s: float = 10.0) -> Message:
        """Open the WebSocket and wait for ``join``; raises :class:`BenchError`."""
        sep = "&" if "?" in self.url else "?"
        try:
            self._ws = await asyncio.wait_for(
                connect(f"{self.url}{sep}access_token={self.token}", max_size=1 << 20,
                        open_timeout=timeout_s), timeout_s)
            first = json.loads(await asyncio.wait_for(self._ws.recv(), timeout_s))
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise BenchError(f"{self.name}: signaling connect to {self.url}: {exc!r}") from None
        if first.get("type") != "join":
            raise BenchError(f"{self.name}: expected join, got {first}")
        self.join = first
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return first

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                request_id = msg.get("id")
                future = self._replies.pop(request_id, None) if isinstance(request_id, int) else None
                if future is not None and not future.done():
                    future.set_result(msg)
                    continue
                if msg.get("type") == "error":
                    self.errors.append(msg)
                if self._waiters:
                    for entry in list(self._waiters):
                        predicate, waiter = entry
                        if not waiter.done() and predicate(msg):
                            waiter.set_result(msg)
                            self._waiters.remove(entry)
                if self.on_message is not None:
                    self.on_message(msg)
        except WebSocketException:
            pass
        finally:
            self.closed.set()
            pending = [*self._replies.values(), *(w for _, w in self._waiters)]
            for future in pending:
                if not future.done():
                    future.set_exception(BenchError(f"{self.name}: signaling closed"))
            self._replies.clear()
            self._waiters.clear()

    async def send(self, msg: Message) -> None:
        if self._ws is None:
            raise BenchError(f"{self.name}: signaling is not connected")
        try:
            await self._ws.send(json.dumps(msg, separators=(",", ":")))
        except WebSocketException as exc:
            raise BenchError(f"{self.name}: signaling send: {exc!r}") from None

    async def request(self, msg: Message, timeout_s: float = 10.0) -> Message:
        """Send ``msg`` with a fresh ``id`` and return the reply carrying it; an ``error``
        reply raises :class:`BenchError`."""
        request_id = next(self._ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        await self.send({**msg, "id": request_id})
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._replies.pop(request_id, None)
            raise BenchError(f"{self.name}: no reply to {msg['type']} in {timeout_s} s") from None
        if reply.get("type") == "error":
            raise BenchError(f"{self.name}: {msg['type']} refused: {reply.get('code')}: "
                             f"{reply.get('message')}")
        return reply

    async def exchange(self, msg: Message, predicate: Callable[[Message], bool],
                       timeout_s: float = 10.0) -> Message:
        """Send ``msg`` (with an ``id``) and wait for the first message ``predicate`` accepts
        (for replies the server may send without echoing the ``id``), or an ``error``
        echoing the ``id`` (raised as :class:`BenchError`)."""
        request_id = f"x{next(self._ids)}"

        def matches(reply: Message) -> bool:
            return predicate(reply) or (reply.get("type") == "error"
                                        and reply.get("id") == request_id)

        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        entry = (matches, future)
        self._waiters.append(entry)
        await self.send({**msg, "id": request_id})
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            if entry in self._waiters:
                self._waiters.remove(entry)
            raise BenchError(f"{self.name}: no reply to {msg['type']} in {timeout_s} s") from None
        if reply.get("type") == "error":
            raise BenchError(f"{self.name}: {msg['type']} refused: {reply.get('code')}: "
                             f"{reply.get('message')}")
        return reply

    async def close(self, leave: bool = True) -> None:
        if self._ws is not None:
            if leave:
                with contextlib.suppress(BenchError):
                    await self.send({"type": "leave"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
