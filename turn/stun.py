"""STUN messages (RFC 8489) with the TURN attributes (RFC 8656), driven by one attribute table.

Unlike aioice's codec this one keeps unknown attributes (as raw bytes, so messages round-trip
byte for byte and the server can answer 420 naming the unknown comprehension-required ones),
knows DATA, EVEN-PORT, RESERVATION-TOKEN and the address-family attributes, and verifies
FINGERPRINT while parsing. Every malformed input raises :class:`ValueError` with an exact
message, and nothing else.

Addresses are ``(ip, port)`` tuples with the IP as text (``"192.0.2.1"``, ``"2001:db8::1"``).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "Addr",
    "AttrSpec",
    "Message",
    "attr_name",
    "is_stun",
    "method_name",
]

Addr = tuple[str, int]

MAGIC_COOKIE = 0x2112A442
COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

# Methods (RFC 8489, RFC 8656).
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

METHOD_NAMES = {
    BINDING: "binding", ALLOCATE: "allocate", REFRESH: "refresh", SEND: "send", DATA: "data",
    CREATE_PERMISSION: "create_permission", CHANNEL_BIND: "channel_bind",
}

# Classes, already in their bit positions of the message type.
REQUEST = 0x0000
INDICATION = 0x0010
SUCCESS = 0x0100
ERROR = 0x0110

# Attribute types.
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
TRANSPORT_UDP = 17

# Longest text values (RFC 8489 §14: USERNAME < 509 bytes; REALM, NONCE, SOFTWARE, reason
# phrases < 763 bytes).
MAX_USERNAME_BYTES = 508
MAX_TEXT_BYTES = 763


def _u(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _need(value: bytes, length: int, name: str) -> None:
    if len(value) != length:
        raise ValueError(f"{name} must be {length} bytes, got {len(value)}")


# --- value codecs: decode(value, transaction_id) -> Any, encode(value, transaction_id) -> bytes


def _decode_address(value: bytes, xor_key: bytes | None, name: str) -> Addr:
    if len(value) < 4:
        raise ValueError(f"{name} is truncated")
    family = value[1]
    port = _u(value[2:4])
    if family == FAMILY_IPV4:
        _need(value, 8, name)
        raw = value[4:8]
    elif family == FAMILY_IPV6:
        _need(value, 20, name)
        raw = value[4:20]
    else:
        raise ValueError(f"{name} has unknown address family {family}")
    if xor_key is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_key, strict=False))
    if family == FAMILY_IPV4:
        ip = f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
    else:
        ip = str(ipaddress.IPv6Address(raw))
    return ip, port


def _encode_address(addr: Addr, xor_key: bytes | None) -> bytes:
    ip, port = addr
    packed = ipaddress.ip_address(ip).packed
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    family = FAMILY_IPV4 if len(packed) == 4 else FAMILY_IPV6
    if xor_key is not None:
        port ^= MAGIC_COOKIE >> 16
        packed = bytes(a ^ b for a, b in zip(packed, xor_key, strict=False))
    return bytes((0, family)) + port.to_bytes(2, "big") + packed


def _plain_address(name: str) -> tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]:
    return (lambda v, tid: _decode_address(v, None, name),
            lambda a, tid: _encode_address(a, None))


def _xor_address(name: str) -> tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]:
    return (lambda v, tid: _decode_address(v, COOKIE_BYTES + tid, name),
            lambda a, tid: _encode_address(a, COOKIE_BYTES + tid))


def _text(name: str, limit: int) -> tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]:
    def decode(v: bytes, tid: bytes) -> str:
        if len(v) > limit:
            raise ValueError(f"{name} longer than {limit} bytes")
        return v.decode("utf-8")

    def encode(s: str, tid: bytes) -> bytes:
        raw = s.encode("utf-8")
        if len(raw) > limit:
            raise ValueError(f"{name} longer than {limit} bytes")
        return raw

    return decode, encode


def _uint(name: str, size: int) -> tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]:
    def decode(v: bytes, tid: bytes) -> int:
        _need(v, size, name)
        return _u(v)

    return decode, lambda n, tid: int(n).to_bytes(size, "big")


def _first_byte(name: str) -> tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]:
    """A one-byte value followed by three reserved bytes (REQUESTED-TRANSPORT, *-FAMILY)."""

    def decode(v: bytes, tid: bytes) -> int:
        _need(v, 4, name)
        return v[0]

    return decode, lambda n, tid: bytes((n, 0, 0, 0))


def _decode_channel(v: bytes, tid: bytes) -> int:
    _need(v, 4, "CHANNEL-NUMBER")
    return _u(v[0:2])


def _decode_error(v: bytes, tid: bytes) -> tuple[int, str]:
    if len(v) < 4:
        raise ValueError("ERROR-CODE is truncated")
    if len(v) > 4 + MAX_TEXT_BYTES:
        raise ValueError(f"ERROR-CODE reason longer than {MAX_TEXT_BYTES} bytes")
    klass, number = v[2] & 0x07, v[3]
    if not 3 <= klass <= 6 or number > 99:
        raise ValueError(f"ERROR-CODE {klass}{number:02d} out of range")
    return klass * 100 + number, v[4:].decode("utf-8")


def _encode_error(value: tuple[int, str], tid: bytes) -> bytes:
    code, reason = value
    return bytes((0, 0, code // 100, code % 100)) + reason.encode("utf-8")


def _decode_address_error(v: bytes, tid: bytes) -> tuple[int, int, str]:
    if len(v) < 4:
        raise ValueError("ADDRESS-ERROR-CODE is truncated")
    code, reason = _decode_error(bytes((0, 0)) + v[2:], tid)
    return v[0], code, reason


def _encode_address_error(value: tuple[int, int, str], tid: bytes) -> bytes:
    family, code, reason = value
    return bytes((family, 0, code // 100, code % 100)) + reason.encode("utf-8")


def _decode_unknown(v: bytes, tid: bytes) -> tuple[int, ...]:
    if len(v) % 2:
        raise ValueError("UNKNOWN-ATTRIBUTES has an odd length")
    return tuple(_u(v[i:i + 2]) for i in range(0, len(v), 2))


def _decode_even_port(v: bytes, tid: bytes) -> bool:
    _need(v, 1, "EVEN-PORT")
    return bool(v[0] & 0x80)


def _decode_empty(name: str) -> Callable[[bytes, bytes], Any]:
    def decode(v: bytes, tid: bytes) -> None:
        _need(v, 0, name)

    return decode


def _decode_bytes(name: str, size: int) -> Callable[[bytes, bytes], Any]:
    def decode(v: bytes, tid: bytes) -> bytes:
        _need(v, size, name)
        return v

    return decode


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """How one attribute type is named, decoded and encoded."""

    name: str
    decode: Callable[[bytes, bytes], Any]
    encode: Callable[[Any, bytes], bytes]


def _spec(name: str, codec: tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]
          ) -> AttrSpec:
    return AttrSpec(name, codec[0], codec[1])


def _raw(v: Any, tid: bytes) -> bytes:
    return bytes(v)


# The table. MESSAGE-INTEGRITY and FINGERPRINT are handled by the message itself.
ATTRIBUTES: dict[int, AttrSpec] = {
    MAPPED_ADDRESS: _spec("MAPPED-ADDRESS", _plain_address("MAPPED-ADDRESS")),
    USERNAME: _spec("USERNAME", _text("USERNAME", MAX_USERNAME_BYTES)),
    MESSAGE_INTEGRITY: AttrSpec("MESSAGE-INTEGRITY", _decode_bytes("MESSAGE-INTEGRITY", 20), _raw),
    ERROR_CODE: AttrSpec("ERROR-CODE", _decode_error, _encode_error),
    UNKNOWN_ATTRIBUTES: AttrSpec(
        "UNKNOWN-ATTRIBUTES", _decode_unknown,
        lambda types, tid: b"".join(int(t).to_bytes(2, "big") for t in types)),
    CHANNEL_NUMBER: AttrSpec("CHANNEL-NUMBER", _decode_channel,
                             lambda n, tid: int(n).to_bytes(2, "big") + b"\x00\x00"),
    LIFETIME: _spec("LIFETIME", _uint("LIFETIME", 4)),
    XOR_PEER_ADDRESS: _spec("XOR-PEER-ADDRESS", _xor_address("XOR-PEER-ADDRESS")),
    DATA_ATTR: AttrSpec("DATA", lambda v, tid: v, _raw),
    REALM: _spec("REALM", _text("REALM", MAX_TEXT_BYTES)),
    NONCE: _spec("NONCE", _text("NONCE", MAX_TEXT_BYTES)),
    XOR_RELAYED_ADDRESS: _spec("XOR-RELAYED-ADDRESS", _xor_address("XOR-RELAYED-ADDRESS")),
    REQUESTED_ADDRESS_FAMILY: _spec("REQUESTED-ADDRESS-FAMILY",
                                    _first_byte("REQUESTED-ADDRESS-FAMILY")),
    EVEN_PORT: AttrSpec("EVEN-PORT", _decode_even_port,
                        lambda r, tid: b"\x80" if r else b"\x00"),
    REQUESTED_TRANSPORT: _spec("REQUESTED-TRANSPORT", _first_byte("REQUESTED-TRANSPORT")),
    DONT_FRAGMENT: AttrSpec("DONT-FRAGMENT", _decode_empty("DONT-FRAGMENT"), lambda v, tid: b""),
    XOR_MAPPED_ADDRESS: _spec("XOR-MAPPED-ADDRESS", _xor_address("XOR-MAPPED-ADDRESS")),
    RESERVATION_TOKEN: AttrSpec("RESERVATION-TOKEN", _decode_bytes("RESERVATION-TOKEN", 8), _raw),
    ADDITIONAL_ADDRESS_FAMILY: _spec("ADDITIONAL-ADDRESS-FAMILY",
                                     _first_byte("ADDITIONAL-ADDRESS-FAMILY")),
    ADDRESS_ERROR_CODE: AttrSpec("ADDRESS-ERROR-CODE", _decode_address_error,
                                 _encode_address_error),
    SOFTWARE: _spec("SOFTWARE", _text("SOFTWARE", MAX_TEXT_BYTES)),
    FINGERPRINT: _spec("FINGERPRINT", _uint("FINGERPRINT", 4)),
}


def attr_name(attr_type: int) -> str:
    spec = ATTRIBUTES.get(attr_type)
    return spec.name if spec else f"0x{attr_type:04X}"


def method_name(method: int) -> str:
    return METHOD_NAMES.get(method, f"0x{method:03X}")


def message_type(method: int, cls: int) -> int:
    return ((method & 0x0F80) << 2) | ((method & 0x0070) << 1) | (method & 0x000F) | cls


def split_type(mtype: int) -> tuple[int, int]:
    method = ((mtype & 0x3E00) >> 2) | ((mtype & 0x00E0) >> 1) | (mtype & 0x000F)
    return method, mtype & 0x0110


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test: the first two bits are 0 and the magic cookie is present."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == COOKIE_BYTES


def fingerprint_of(data: bytes) -> int:
    return (binascii.crc32(data) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _header(mtype: int, body_length: int, tid: bytes) -> bytes:
    return mtype.to_bytes(2, "big") + body_length.to_bytes(2, "big") + COOKIE_BYTES + tid


def _attr(attr_type: int, value: bytes) -> bytes:
    pad = -len(value) % 4
    return attr_type.to_bytes(2, "big") + len(value).to_bytes(2, "big") + value + b"\x00" * pad


@dataclass(slots=True)
class Message:
    """One STUN message. ``attributes`` keeps wire order; unknown ones hold raw bytes."""

    method: int
    cls: int
    transaction_id: bytes
    attributes: list[tuple[int, Any]] = field(default_factory=list)
    # Set by parse(): the received MESSAGE-INTEGRITY value, whether a (valid) FINGERPRINT was
    # present, and unknown comprehension-required attribute types.
    integrity: bytes | None = None
    fingerprint: bool = False
    unknown_required: tuple[int, ...] = ()
    _integrity_input: bytes = b""

    def get(self, attr_type: int, default: Any = None) -> Any:
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return default

    def get_all(self, attr_type: int) -> list[Any]:
        return [v for t, v in self.attributes if t == attr_type]

    def has(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)

    def add(self, attr_type: int, value: Any = None) -> Message:
        self.attributes.append((attr_type, value))
        return self

    def check_integrity(self, key: bytes) -> bool:
        """True if the received MESSAGE-INTEGRITY is the HMAC-SHA1 of the message with ``key``."""
        if self.integrity is None:
            return False
        expected = hmac.new(key, self._integrity_input, hashlib.sha1).digest()
        return hmac.compare_digest(expected, self.integrity)

    def encode(self, key: bytes | None = None, fingerprint: bool = False) -> bytes:
        """Serialize; with ``key`` append MESSAGE-INTEGRITY, with ``fingerprint`` FINGERPRINT."""
        tid = self.transaction_id
        if len(tid) != 12:
            raise ValueError("transaction id must be 12 bytes")
        parts = []
        for attr_type, value in self.attributes:
            if attr_type in (MESSAGE_INTEGRITY, FINGERPRINT):
                continue
            spec = ATTRIBUTES.get(attr_type)
            raw = spec.encode(value, tid) if spec is not None else bytes(value)
            if len(raw) > 0xFFFF:
                raise ValueError(f"{attr_name(attr_type)} longer than 65535 bytes")
            parts.append(_attr(attr_type, raw))
        body = b"".join(parts)
        mtype = message_type(self.method, self.cls)
        if key is not None:
            mac = hmac.new(key, _header(mtype, len(body) + 24, tid) + body, hashlib.sha1).digest()
            body += _attr(MESSAGE_INTEGRITY, mac)
        if fingerprint:
            crc = fingerprint_of(_header(mtype, len(body) + 8, tid) + body)
            body += _attr(FINGERPRINT, crc.to_bytes(4, "big"))
        if len(body) > 0xFFFF:
            raise ValueError("message longer than 65535 bytes")
        return _header(mtype, len(body), tid) + body

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Parse one whole message; raise ValueError on anything malformed."""
        data = bytes(data)
        if len(data) < HEADER_LENGTH:
            raise ValueError(f"STUN message truncated: {len(data)} bytes, header needs 20")
        if data[0] & 0xC0:
            raise ValueError("not a STUN message: first two bits are not zero")
        if data[4:8] != COOKIE_BYTES:
            raise ValueError("not a STUN message: wrong magic cookie")
        length = _u(data[2:4])
        if length % 4:
            raise ValueError(f"STUN message length {length} is not a multiple of 4")
        if HEADER_LENGTH + length != len(data):
            raise ValueError(f"STUN message length {length} does not match "
                             f"{len(data) - HEADER_LENGTH} bytes of attributes")
        method, klass = split_type(_u(data[0:2]))
        tid = data[8:20]
        msg = cls(method, klass, tid)
        unknown: list[int] = []
        pos = HEADER_LENGTH
        end = len(data)
        while pos < end:
            if end - pos < 4:
                raise ValueError(f"attribute header truncated at offset {pos}")
            attr_type = _u(data[pos:pos + 2])
            attr_len = _u(data[pos + 2:pos + 4])
            start = pos + 4
            stop = start + attr_len
            if stop > end:
                raise ValueError(f"{attr_name(attr_type)} at offset {pos} overruns the message")
            value = data[start:stop]
            next_pos = stop + (-attr_len % 4)
            if next_pos > end:
                raise ValueError(f"{attr_name(attr_type)} padding overruns the message")
            if attr_type == FINGERPRINT:
                if next_pos != end:
                    raise ValueError("attribute after FINGERPRINT")
                _need(value, 4, "FINGERPRINT")
                if _u(value) != fingerprint_of(data[:pos]):
                    raise ValueError("FINGERPRINT does not match")
                msg.fingerprint = True
            elif msg.integrity is not None:
                pass  # RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY are ignored
            elif attr_type == MESSAGE_INTEGRITY:
                _need(value, 20, "MESSAGE-INTEGRITY")
                msg.integrity = value
                covered = bytearray(data[:pos])
                covered[2:4] = (pos - HEADER_LENGTH + 24).to_bytes(2, "big")
                msg._integrity_input = bytes(covered)
            else:
                spec = ATTRIBUTES.get(attr_type)
                if spec is None:
                    msg.attributes.append((attr_type, value))
                    if attr_type < 0x8000:
                        unknown.append(attr_type)
                else:
                    msg.attributes.append((attr_type, spec.decode(value, tid)))
            pos = next_pos
        msg.unknown_required = tuple(unknown)
        return msg

    def __repr__(self) -> str:
        klass = {REQUEST: "request", INDICATION: "indication", SUCCESS: "success",
                 ERROR: "error"}[self.cls]
        attrs = ", ".join(f"{attr_name(t)}={v!r}" for t, v in self.attributes)
        return f"Message({method_name(self.method)} {klass}, {attrs})"


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()
