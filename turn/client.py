"""A small blocking TURN client on :mod:`turn.stun`, for tools, benchmarks and tests.

One request at a time with the long-term credential dance (401, then 438 when a nonce goes
stale), UDP retransmissions, TCP/TLS framing, ChannelData and Send/Data indications. Anything
that arrives while waiting for a response is kept for :meth:`TurnClient.receive`.
"""

from __future__ import annotations

import collections
import os
import socket
import ssl
import time
from typing import Any

from turn import stun
from turn.channeldata import encode_channel_data, parse_channel_data
from turn.framing import StreamFramer
from turn.stun import Addr, Message

__all__ = ["TurnClient", "error_code"]


def error_code(msg: Message) -> int:
    """0 for a success response, else the ERROR-CODE number."""
    if msg.cls == stun.SUCCESS:
        return 0
    err = msg.get(stun.ERROR_CODE)
    return int(err[0]) if err else -1


class TurnClient:
    def __init__(self, server: Addr, username: str = "", password: str = "", *,
                 transport: str = "udp", ssl_context: ssl.SSLContext | None = None,
                 timeout_s: float = 2.0, local: Addr | None = None) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.transport = transport
        self.timeout_s = timeout_s
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        if local is not None:
            sock.bind(local)
        sock.settimeout(timeout_s)
        sock.connect(server)
        if transport == "tls":
            ctx = ssl_context
            if ctx is None:  # test servers use self-signed certificates
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock: socket.socket = sock
        self.framer = StreamFramer()
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self.relayed: Addr | None = None
        self.mapped: Addr | None = None
        self.backlog: collections.deque[bytes] = collections.deque()

    @property
    def local(self) -> Addr:
        addr = self.sock.getsockname()
        return addr[0], addr[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TurnClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- raw I/O ----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.send(data)
        else:
            self.sock.sendall(data)

    def recv_raw(self, timeout_s: float | None = None) -> bytes:
        """One datagram, or one frame of the stream; socket.timeout when nothing comes."""
        self.sock.settimeout(self.timeout_s if timeout_s is None else timeout_s)
        if self.transport == "udp":
            return self.sock.recv(65536)
        frames: list[bytes] = []
        while not frames:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            frames = self.framer.feed(chunk)
        for extra in frames[1:]:
            self.backlog.append(extra)
        return frames[0]

    # --- requests ---------------------------------------------------------------------------

    def _sign(self, msg: Message) -> bytes:
        if self.key is None or self.nonce is None or self.realm is None:
            return msg.encode(fingerprint=True)
        msg.attributes = [(t, v) for t, v in msg.attributes
                          if t not in (stun.USERNAME, stun.REALM, stun.NONCE)]
        msg.add(stun.USERNAME, self.username).add(stun.REALM, self.realm)
        msg.add(stun.NONCE, self.nonce)
        return msg.encode(self.key, fingerprint=True)

    def transact(self, data: bytes, tid: bytes, tries: int = 3) -> Message:
        """Send an encoded request and wait for the response with transaction id ``tid``."""
        for _ in range(tries if self.transport == "udp" else 1):
            self.send_raw(data)
            deadline = time.monotonic() + self.timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    raw = self.recv_raw(left)
                except TimeoutError:
                    break
                if stun.is_stun(raw) and raw[8:20] == tid:
                    return Message.parse(raw)
                self.backlog.append(raw)
        raise TimeoutError("no response from the TURN server")

    def request(self, msg: Message, *, authenticate: bool = True) -> Message:
        """Send ``msg`` (a request); answer a 401 or 438 challenge once; return the response."""
        for attempt in range(3):
            msg.transaction_id = os.urandom(12)
            data = self._sign(msg) if authenticate else msg.encode(fingerprint=True)
            response = self.transact(data, msg.transaction_id)
            code = error_code(response)
            if not authenticate or code not in (401, 438) or attempt == 2:
                return response
            nonce = response.get(stun.NONCE)
            realm = response.get(stun.REALM)
            if realm is None:
                realm = self.realm
            if nonce is None or realm is None:
                return response
            if code == 401 and self.key is not None and realm == self.realm:
                return response  # our credentials were refused
            self.nonce = nonce
            self.realm = realm
            self.key = stun.long_term_key(self.username, realm, self.password)
        return response

    def allocate(self, *attrs: tuple[int, Any], lifetime: int | None = None) -> Message:
        msg = Message(stun.ALLOCATE, stun.REQUEST, bytes(12))
        msg.add(stun.REQUESTED_TRANSPORT, stun.TRANSPORT_UDP)
        if lifetime is not None:
            msg.add(stun.LIFETIME, lifetime)
        for attr_type, value in attrs:
            msg.add(attr_type, value)
        response = self.request(msg)
        if response.cls == stun.SUCCESS:
            self.relayed = response.get(stun.XOR_RELAYED_ADDRESS)
            self.mapped = response.get(stun.XOR_MAPPED_ADDRESS)
        return response

    def refresh(self, lifetime: int | None = None) -> Message:
        msg = Message(stun.REFRESH, stun.REQUEST, bytes(12))
        if lifetime is not None:
            msg.add(stun.LIFETIME, lifetime)
        return self.request(msg)

    def create_permission(self, *peers: Addr) -> Message:
        msg = Message(stun.CREATE_PERMISSION, stun.REQUEST, bytes(12))
        for peer in peers:
            msg.add(stun.XOR_PEER_ADDRESS, peer)
        return self.request(msg)

    def channel_bind(self, number: int, peer: Addr) -> Message:
        msg = Message(stun.CHANNEL_BIND, stun.REQUEST, bytes(12))
        msg.add(stun.CHANNEL_NUMBER, number).add(stun.XOR_PEER_ADDRESS, peer)
        return self.request(msg)

    def binding(self) -> Message:
        return self.request(Message(stun.BINDING, stun.REQUEST, bytes(12)), authenticate=False)

    # --- data -------------------------------------------------------------------------------

    def send_indication(self, peer: Addr, data: bytes) -> None:
        msg = Message(stun.SEND, stun.INDICATION, os.urandom(12))
        msg.add(stun.XOR_PEER_ADDRESS, peer).add(stun.DATA_ATTR, data)
        self.send_raw(msg.encode(fingerprint=True))

    def send_channel(self, number: int, data: bytes) -> None:
        self.send_raw(encode_channel_data(number, data, pad=self.transport != "udp"))

    def receive(self, timeout_s: float | None = None) -> tuple[int | Addr, bytes]:
        """Next relayed data: ``(channel, payload)`` or ``(peer_addr, payload)``."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            if self.backlog:
                raw = self.backlog.popleft()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no data relayed")
                raw = self.recv_raw(left)
            if raw and 0x40 <= raw[0] <= 0x7F:
                return parse_channel_data(raw)
            if stun.is_stun(raw):
                msg = Message.parse(raw)
                if msg.method == stun.DATA and msg.cls == stun.INDICATION:
                    return msg.get(stun.XOR_PEER_ADDRESS), msg.get(stun.DATA_ATTR)
