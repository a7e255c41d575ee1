"""The asyncio shell around :class:`~turn.server.TurnServer`: sockets, streams, one timer.

* UDP listeners are the loop's datagram transports (uvloop's receive path is compiled).
* Relay sockets are plain non-blocking sockets read with ``loop.add_reader`` (up to 64
  datagrams per wake-up, into one shared buffer) and written with ``sock.sendto``, so one can
  be bound synchronously while the core handles an Allocate.
* TCP and TLS listeners use ``loop.create_server``; :class:`~turn.framing.StreamFramer` cuts
  the stream into messages, and a connection's allocation ends with the connection.
* One timer handle, re-armed only when the core's next deadline moves earlier.

Works on uvloop (``sfu turn`` runs under it) and on the stdlib loop (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from turn.actions import TO_PEER, Action
from turn.auth import Credentials, load_secrets_file, load_users_file, mint_rest_credentials
from turn.config import TurnConfig
from turn.errors import TurnConfigError
from turn.framing import StreamFramer
from turn.server import TurnServer
from turn.stun import Addr

__all__ = ["TurnService", "UdpRelaySockets"]

logger = structlog.get_logger("turn")

BATCH = 64  # datagrams read per wake-up before yielding to the loop
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
STREAM_WRITE_LIMIT = 1024 * 1024  # relayed data to a TCP/TLS client beyond this is dropped


def _udp_socket(ip: str, port: int, buffers: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if buffers:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)
        sock.bind((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpRelaySockets:
    """:class:`~turn.ports.RelaySockets` on real sockets; datagrams go to ``shell``."""

    def __init__(self, shell: TurnService) -> None:
        self._shell = shell
        self.socks: dict[int, socket.socket] = {}

    def open(self, relay_id: int, ip: str, port: int) -> bool:
        try:
            sock = _udp_socket(ip, port)
        except OSError:
            return False
        self.socks[relay_id] = sock
        self._shell.loop.add_reader(sock.fileno(), self._shell._relay_readable, relay_id, sock)
        return True

    def close(self, relay_id: int) -> None:
        sock = self.socks.pop(relay_id, None)
        if sock is not None:
            self._shell.loop.remove_reader(sock.fileno())
            sock.close()


class _Stream(asyncio.Protocol):
    """One TCP or TLS client connection."""

    def __init__(self, shell: TurnService, name: str) -> None:
        self.shell = shell
        self.name = name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.shell._streams) >= self.shell.max_streams:
            self.shell.server.stats.dropped["stream_limit"] += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        self.shell._streams[(self.name, self.peer)] = self

    def data_received(self, data: bytes) -> None:
        shell = self.shell
        try:
            frames = self.framer.feed(data)
        except ValueError:
            shell.server.stats.dropped["unframeable_stream"] += 1
            if self.transport is not None:
                self.transport.abort()
            return
        now = shell.loop.time()
        for frame in frames:
            actions = shell.server.receive(frame, self.peer, self.name, now)
            if actions:
                shell._perform(actions)
        shell._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        shell = self.shell
        if shell._streams.get((self.name, self.peer)) is self:
            del shell._streams[(self.name, self.peer)]
        shell.server.connection_lost(self.name, self.peer, shell.loop.time())

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > STREAM_WRITE_LIMIT:
            self.shell.server.stats.dropped["stream_backlog"] += 1
            return
        transport.write(data)


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, shell: TurnService, name: str) -> None:
        self.shell = shell
        self.name = name
        self.receive = shell.server.receive

    def datagram_received(self, data: bytes, addr: Any) -> None:
        shell = self.shell
        actions = self.receive(data, addr if len(addr) == 2 else addr[:2], self.name,
                               shell.loop.time())
        if actions:
            shell._perform(actions)
            shell._rearm()


class TurnService:
    """A TURN server on real sockets, built from a :class:`~turn.config.TurnConfig`.

    ``users`` and ``rest_secrets`` add static users and REST secrets to those read from the
    config's files; ``always_allow`` (``(ip, port)`` pairs or CIDRs) goes to the peer policy:
    the daemon gives its own media address. With no REST secret configured a random one is
    made for this process (unless ``mint_secret=False``), so :meth:`ice_servers` can always
    mint credentials. Build it inside the event loop it will run on; nothing is bound until
    :meth:`start`.
    """

    def __init__(self, cfg: TurnConfig, *, users: Mapping[str, str] | None = None,
                 rest_secrets: Iterable[str] = (), always_allow: Iterable[tuple[str, int] | str] = (),
                 rng: random.Random | None = None, mint_secret: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        all_users = dict(load_users_file(cfg.users_file)) if cfg.users_file else {}
        all_users.update(users or {})
        all_secrets = list(load_secrets_file(cfg.secret_file)) if cfg.secret_file else []
        all_secrets += list(rest_secrets)
        if not all_secrets and mint_secret:
            all_secrets.append(secrets.token_urlsafe(32))
        if not all_users and not all_secrets:
            raise TurnConfigError("turn", "no credentials: give users_file, secret_file or --user")
        self.rest_secret = all_secrets[0] if all_secrets else None
        self.loop = asyncio.get_running_loop()  # build it inside the loop it will run on
        self.relays = UdpRelaySockets(self)
        relay_ips = cfg.effective_relay_ips()
        advertised = {}
        if cfg.external_ip:
            advertised = {ip: cfg.external_ip for ip in relay_ips if ":" not in ip}
        self.server = TurnServer(
            Credentials(cfg.realm, all_users, all_secrets), self.relays,
            relay_ips=relay_ips, advertised_ips=advertised,
            allow_peers=cfg.allow_peers, deny_peers=cfg.deny_peers, always_allow=always_allow,
            min_port=cfg.relay_port_min, max_port=cfg.relay_port_max,
            user_quota=cfg.user_quota, total_quota=cfg.total_quota,
            bandwidth_bps=cfg.bandwidth_bytes_per_s, max_lifetime_s=cfg.max_lifetime_s,
            nonce_lifetime_s=cfg.nonce_lifetime_s, legacy_channels=cfg.rfc5766_channels,
            software=cfg.software, rng=rng, on_event=self._event)
        self._udp_transports: dict[str, Any] = {}  # listener name -> datagram transport
        self._servers: list[Any] = []  # asyncio or uvloop Server objects
        self._streams: dict[tuple[str, Addr], _Stream] = {}
        # TCP/TLS connections accepted at once; more are closed as they arrive.
        self.max_streams = max(64, 2 * cfg.total_quota)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self.udp_addrs: list[Addr] = []
        self.tcp_addrs: list[Addr] = []
        self.tls_addr: Addr | None = None
        self.send_errors = 0
        # One receive buffer for every socket: each datagram is copied out of it at once.
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)

    @property
    def stats(self) -> dict[str, Any]:
        snap = self.server.snapshot()
        snap["send_errors"] = self.send_errors
        snap["stream_connections"] = len(self._streams)
        return snap

    def _event(self, name: str, fields: dict[str, Any]) -> None:
        logger.info(name, **fields)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server.wall_offset_s = time.time() - self.loop.time()
        try:
            for i, (ip, port) in enumerate(self.cfg.listen_addrs()):
                suffix = f"/{i}" if i else ""
                sock = _udp_socket(ip, port, buffers=True)
                bound = sock.getsockname()[:2]
                name = "udp" + suffix
                self.udp_addrs.append(bound)
                transport, _ = await self.loop.create_datagram_endpoint(
                    functools.partial(_UdpListener, self, name), sock=sock)
                # The stdlib loop would read each datagram into a fresh 256 KiB buffer.
                with contextlib.suppress(AttributeError):
                    transport.max_size = 65536  # type: ignore[attr-defined]
                self._udp_transports[name] = transport
                tcp_name = "tcp" + suffix
                srv = await self.loop.create_server(
                    functools.partial(_Stream, self, tcp_name), ip, bound[1], reuse_address=True)
                self._servers.append(srv)
                self.tcp_addrs.append(srv.sockets[0].getsockname()[:2])
            tls = self.cfg.tls_addr()
            if tls is not None:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                try:
                    ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
                except (OSError, ssl.SSLError) as exc:
                    raise TurnConfigError("turn.tls_cert", f"cannot load: {exc}") from None
                srv = await self.loop.create_server(
                    functools.partial(_Stream, self, "tls"), tls[0], tls[1], ssl=ctx,
                    reuse_address=True)
                self._servers.append(srv)
                self.tls_addr = srv.sockets[0].getsockname()[:2]
        except BaseException:
            await self.close()
            raise
        logger.info("turn_started", udp=[f"{a[0]}:{a[1]}" for a in self.udp_addrs],
                    tcp=[f"{a[0]}:{a[1]}" for a in self.tcp_addrs],
                    tls=f"{self.tls_addr[0]}:{self.tls_addr[1]}" if self.tls_addr else "off",
                    realm=self.cfg.realm, relay_ips=self.cfg.effective_relay_ips())

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for srv in self._servers:
            srv.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.abort()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
        self._servers.clear()
        for transport in self._udp_transports.values():
            transport.close()
        self._udp_transports.clear()
        self.server.close()

    def ice_servers(self, identity: str, now_unix: float | None = None) -> list[dict[str, Any]]:
        """The ``ice_servers`` entry for a participant: fresh REST credentials and URLs."""
        if self.rest_secret is None:
            return []
        now_unix = time.time() if now_unix is None else now_unix
        username, password = mint_rest_credentials(self.rest_secret, identity, now_unix,
                                                   self.cfg.credential_ttl_s)
        return [{"urls": self.urls(), "username": username, "credential": password}]

    def urls(self) -> list[str]:
        def host(ip: str) -> str:
            h = self.cfg.announce_host or ip
            return f"[{h}]" if ":" in h else h

        urls: list[str] = []
        if self.udp_addrs:
            ip, port = self.udp_addrs[0]
            urls += [f"turn:{host(ip)}:{port}?transport=udp",
                     f"turn:{host(ip)}:{port}?transport=tcp"]
        if self.tls_addr is not None:
            urls.append(f"turns:{host(self.tls_addr[0])}:{self.tls_addr[1]}?transport=tcp")
        return urls

    # --- I/O callbacks ----------------------------------------------------------------------

    def _relay_readable(self, relay_id: int, sock: socket.socket) -> None:
        relay_received = self.server.relay_received
        recv_into = sock.recvfrom_into
        buf, view = self._buf, self._view
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                n, addr = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # closed under us, or an error queued on the socket
                break
            actions = relay_received(relay_id, view[:n].tobytes(),
                                     addr if len(addr) == 2 else addr[:2], now)
            if actions:
                self._perform(actions)

    def _perform(self, actions: list[Action]) -> None:
        for kind, route, addr, data in actions:
            if kind == TO_PEER:
                sock = self.relays.socks.get(route)
                if sock is not None:
                    try:
                        sock.sendto(data, addr)
                    except OSError:  # buffer full, or the peer's network unreachable
                        self.send_errors += 1
                continue
            transport = self._udp_transports.get(route)
            if transport is not None:
                transport.sendto(data, addr)
                continue
            stream = self._streams.get((route, addr))
            if stream is not None:
                stream.send(data)

    def _rearm(self) -> None:
        t = self.server.get_timer()
        if t is None or t >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = t
        self._timer = self.loop.call_at(t, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = float("inf")
        # uvloop's clock has millisecond steps: never run earlier than what was asked for.
        self.server.handle_timeout(max(self.loop.time(), due))
        self._rearm()
