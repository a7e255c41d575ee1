"""The signaling WebSocket shell at ``/rtc``: authenticate, feed the pure cores, route replies.

Each connection has one writer task fed by a bounded queue, so a client that never reads
cannot hold up another. Room timers (resume windows, empty rooms) and token refresh run in
one ticker task owned by the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

import sfu
from sfu import log, metrics
from sfu.config import Config
from sfu.dispatch import Connection, Dispatcher, permission_from_claims
from sfu.media import MediaNode
from sfu.rooms import Out, RoomService
from signaling import errors as E
from signaling.auth import Claims, TokenVerifier, check_room_join, mint_token
from signaling.errors import AuthError, SignalingError
from signaling.messages import MessageError, parse_client_message
from signaling.ratelimit import TokenBucket

logger = log.get("sfu.signaling")

OUTGOING_QUEUE_MAX = 1024


class _Socket:
    """One accepted WebSocket with its outgoing queue and writer task."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[tuple[str | None, int | None]] = asyncio.Queue(
            OUTGOING_QUEUE_MAX)
        self.writer = asyncio.create_task(self._write())
        self.closing = False
        self.refresh_at: float | None = None

    def send(self, msg: dict[str, Any], close: int | None = None) -> None:
        if self.closing:
            return
        if close is not None:
            self.closing = True
        try:
            self.queue.put_nowait((json.dumps(msg, separators=(",", ":")), close))
        except asyncio.QueueFull:
            self.closing = True
            metrics.signaling_errors.labels("slow_consumer").inc()
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait((None, E.CLOSE_GOING_AWAY))
            return
        metrics.signaling_messages.labels("out").inc()

    def close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait((None, code))

    async def _write(self) -> None:
        try:
            while True:
                text, close = await self.queue.get()
                if text is not None:
                    await self.ws.send_str(text)
                if close is not None:
                    await self.ws.close(code=close)
                    return
        except (ConnectionError, RuntimeError):
            return


class SignalServer:
    def __init__(self, cfg: Config, *, verifier: TokenVerifier, rooms: RoomService,
                 api_secrets: dict[str, str], media: MediaNode | None = None,
                 ice_servers: Callable[[str], list[dict[str, Any]]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ice_servers = ice_servers
        self.cfg = cfg
        self.verifier = verifier
        self.rooms = rooms
        self.media = media
        self.dispatcher = Dispatcher(rooms, media)
        self.clock = clock
        self.draining = False
        self._sockets: dict[str, _Socket] = {}
        self._conns: dict[str, Connection] = {}
        self._minting_key = next(iter(api_secrets.items()), None)
        self._control_seq = 0

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/rtc", self.handle)

    # -- delivery ----------------------------------------------------------------------------
    def deliver(self, outs: list[Out]) -> None:
        if self.media is not None and self.rooms.dirty_rooms:
            outs = outs + self.media.reconcile()
        for out in outs:
            sock = self._sockets.get(out.session_id)
            if sock is not None:
                sock.send(out.msg, out.close)
        metrics.participants.set(self.rooms.participant_count())
        metrics.rooms.set(len(self.rooms.rooms))

    def _error(self, sock: _Socket, exc: SignalingError, request_id: Any = None,
               close: int | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
        if request_id is not None:
            body["id"] = request_id
        metrics.signaling_errors.labels(exc.code).inc()
        sock.send(body, close)

    # -- connection --------------------------------------------------------------------------
    def _token(self, request: web.Request) -> str:
        token = request.query.get("access_token", "")
        if not token:
            header = request.headers.get("Authorization", "")
            if header.lower().startswith("bearer "):
                token = header[7:].strip()
        if not token:
            raise AuthError(E.TOKEN_MISSING, "no access_token query parameter or bearer header")
        return token

    async def handle(self, request: web.Request) -> web.StreamResponse:
        accepted_at = time.perf_counter()
        scfg = self.cfg.signaling
        ws = web.WebSocketResponse(max_msg_size=scfg.max_message_bytes,
                                   heartbeat=scfg.ping_interval_s)
        await ws.prepare(request)
        sock = _Socket(ws)
        metrics.signaling_connections.inc()
        conn: Connection | None = None
        try:
            try:
                conn = self._open(request, sock)
            except SignalingError as exc:
                close = E.CLOSE_AUTH_FAILED if isinstance(exc, AuthError) else E.CLOSE_JOIN_REFUSED
                self._error(sock, exc, close=close)
                logger.info("connection_refused", code=exc.code)
            else:
                metrics.join_latency.observe(time.perf_counter() - accepted_at)
                await self._serve(conn, sock)
        finally:
            metrics.signaling_connections.dec()
            if conn is not None:
                self._closed(conn, sock)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sock.writer, 5)
            if not sock.writer.done():
                sock.writer.cancel()
            if not ws.closed:
                await ws.close()
        return ws

    def _open(self, request: web.Request, sock: _Socket) -> Connection:
        now = self.clock()
        claims = self.verifier.verify(self._token(request), now)
        g = claims.grant
        if not g.room_join:
            if g.room_admin or g.room_create or g.room_list or g.room_record:
                return self._open_control(claims, sock)
        check_room_join(claims, request.query.get("room") or None)
        resume = request.query.get("resume")
        if resume:
            p = self.rooms.resume(resume, identity=claims.identity, room_name=g.room)
            old = self._sockets.get(p.session_id)
            if old is not None and old is not sock:
                old.close(E.CLOSE_GOING_AWAY)
            metrics.sessions_resumed.inc()
            outs: list[Out] = []
        else:
            if self.draining:
                raise SignalingError(E.SERVER_DRAINING, "server is shutting down; join another")
            p, outs = self.rooms.join(g.room, identity=claims.identity, name=claims.name,
                                      metadata=claims.metadata,
                                      permission=permission_from_claims(claims), now=now)
        conn = Connection(key=p.session_id, claims=claims, participant=p)
        self._sockets[p.session_id] = sock
        self._conns[p.session_id] = conn
        self._schedule_refresh(sock, claims, now)
        join = self.rooms.join_message(p, resumed=bool(resume))
        ice = self.ice_servers(claims.identity) if self.ice_servers is not None else []
        join.update(ice_servers=ice, ping_interval_s=self.cfg.signaling.ping_interval_s,
                    server_version=sfu.__version__)
        sock.send(join)
        self.deliver(outs)
        logger.info("participant_joined" if not resume else "participant_resumed",
                    room=g.room, participant=claims.identity, session=p.session_id)
        return conn

    def _open_control(self, claims: Claims, sock: _Socket) -> Connection:
        self._control_seq += 1
        key = f"CO_{self._control_seq}"
        conn = Connection(key=key, claims=claims)
        self._sockets[key] = sock
        self._conns[key] = conn
        g = claims.grant
        sock.send({"type": "control_ready", "identity": claims.identity,
                   "grants": {"room": g.room, "room_admin": g.room_admin,
                              "room_create": g.room_create, "room_list": g.room_list,
                              "room_record": g.room_record},
                   "server_version": sfu.__version__})
        return conn

    def _schedule_refresh(self, sock: _Socket, claims: Claims, now: float) -> None:
        if self._minting_key is None:
            return
        sock.refresh_at = max(now, claims.expires_at - self.cfg.signaling.token_refresh_before_s)

    async def _serve(self, conn: Connection, sock: _Socket) -> None:
        scfg = self.cfg.signaling
        bucket = TokenBucket(scfg.rate_limit_per_s, scfg.rate_limit_burst, time.monotonic())
        async for frame in sock.ws:
            if sock.closing:
                break
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            metrics.signaling_messages.labels("in").inc()
            if not bucket.allow(time.monotonic()):
                if bucket.denied_in_a_row > scfg.rate_limit_burst:
                    self._error(sock, SignalingError(E.RATE_LIMITED, "message flood; closing"),
                                close=E.CLOSE_RATE_LIMITED)
                    break
                self._error(sock, SignalingError(
                    E.RATE_LIMITED, f"more than {scfg.rate_limit_per_s:g} messages/s; dropped"))
                continue
            request_id = None
            try:
                msg = parse_client_message(frame.data, scfg.max_message_bytes)
                request_id = msg.get("id")
                if conn.participant is not None and sock is not self._sockets.get(conn.key):
                    break  # superseded by a resumed connection
                outs = self.dispatcher.handle(conn, msg, self.clock())
            except MessageError as exc:
                self._error(sock, exc, exc.request_id)
                continue
            except SignalingError as exc:
                self._error(sock, exc, request_id)
                continue
            except Exception:  # a bug must end this session only, never the daemon
                logger.exception("signaling_handler_failed", session=conn.key)
                self._error(sock, SignalingError(E.INTERNAL_ERROR, "internal error"),
                            request_id, close=E.CLOSE_GOING_AWAY)
                break
            self.deliver(outs)
        if sock.ws.close_code == E.CLOSE_MESSAGE_TOO_BIG:
            metrics.signaling_errors.labels(E.MESSAGE_TOO_LARGE).inc()

    def _closed(self, conn: Connection, sock: _Socket) -> None:
        if self._sockets.get(conn.key) is not sock:
            return  # replaced by a resumed connection
        del self._sockets[conn.key]
        del self._conns[conn.key]
        p = conn.participant
        if p is not None and self.rooms.by_session.get(p.session_id) is p:
            self.rooms.disconnect(p.session_id, self.clock())
            logger.info("participant_disconnected", room=p.room, participant=p.identity,
                        session=p.session_id, resume_window_s=self.rooms.resume_window_s)

    # -- timers ------------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        self.deliver(self.rooms.handle_timeout(now))
        if self._minting_key is None:
            return
        for key, sock in list(self._sockets.items()):
            if sock.refresh_at is None or now < sock.refresh_at:
                continue
            conn = self._conns[key]
            conn.claims = self._refreshed_claims(conn, now)
            api_key, secret = self._minting_key
            token = mint_token(api_key, secret, identity=conn.claims.identity, now=now,
                               ttl_s=self.cfg.signaling.token_refresh_ttl_s,
                               grant=conn.claims.grant, name=conn.claims.name,
                               metadata=conn.claims.metadata)
            sock.send({"type": "token_refresh", "token": token})
            self._schedule_refresh(sock, conn.claims, now)

    def _refreshed_claims(self, conn: Connection, now: float) -> Claims:
        grant = conn.claims.grant
        p = conn.participant
        name, metadata = conn.claims.name, conn.claims.metadata
        if p is not None:  # refreshed tokens carry the participant's current permissions
            perm = p.permission
            grant = dataclasses.replace(
                grant, can_publish=perm.can_publish, can_subscribe=perm.can_subscribe,
                can_publish_data=perm.can_publish_data,
                can_publish_sources=tuple(perm.can_publish_sources),
                can_update_own_metadata=perm.can_update_metadata, hidden=perm.hidden)
            name, metadata = p.name, p.metadata
        return dataclasses.replace(conn.claims, grant=grant, name=name, metadata=metadata,
                                   expires_at=now + self.cfg.signaling.token_refresh_ttl_s)

    async def run(self, interval_s: float = 0.25) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug in a timer must not stop the ticker
                logger.exception("signaling_tick_failed")
            await asyncio.sleep(interval_s)

    # -- drain -------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        self.draining = True

    def session_count(self) -> int:
        return self.rooms.participant_count()

    async def finish_drain(self) -> None:
        """Tell every connection to leave with ``server_shutdown`` and wait for the writers."""
        leave = {"type": "leave", "reason": "server_shutdown", "can_reconnect": True}
        for sock in list(self._sockets.values()):
            sock.send(leave, E.CLOSE_GOING_AWAY)
        writers = [s.writer for s in self._sockets.values()]
        if writers:
            await asyncio.wait(writers, timeout=2)
