"""ICE-lite, server side, for many transports sharing one UDP port (pure, sans-I/O).

RFC 8445 §2.5 (lite agents), RFC 7983 (demultiplexing by the first byte), RFC 7675 (consent).

The server never sends checks: it answers authenticated Binding requests and learns the
client's 5-tuple from them. Until a tuple is learned a datagram can only be told apart by the
USERNAME of a STUN request (``"<local ufrag>:<remote ufrag>"``); once learned, DTLS and
SRTP/SRTCP from that tuple are routed by a single dict lookup on the source address.

    first byte   0..3     STUN          → answered here (response bytes in the decision)
                 20..63   DTLS          → Decision(Kind.DTLS, transport_id)
                 128..191 RTP / RTCP    → Decision(Kind.RTP, transport_id)
                 anything else          → dropped, counted in ``mux.drops[reason]``

Time (``now``, monotonic seconds) is passed in; nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import enum
import random
import secrets
import string
import struct
from dataclasses import dataclass
from typing import Any, Final

from aioice import stun

__all__ = [
    "Addr",
    "Decision",
    "DropReason",
    "IceCredentials",
    "IceLiteMux",
    "Kind",
]

#: A datagram's source address as the socket reports it: ``(host, port)`` for IPv4,
#: ``(host, port, flowinfo, scope_id)`` for IPv6.
Addr = tuple[Any, ...]

_STUN_COOKIE: Final = struct.pack("!I", stun.COOKIE)
_ICE_CHARS: Final = string.ascii_letters + string.digits + "+/"
_ROLE_CONFLICT: Final = (487, "Role Conflict")


class Kind(enum.Enum):
    """What the shell does with a datagram."""

    STUN = "stun"  #: an authenticated Binding request: send ``response`` back to the source
    DTLS = "dtls"  #: hand to the transport's DTLS adapter
    RTP = "rtp"  #: SRTP or SRTCP: hand to the transport's synchronous SRTP callback
    DROP = "drop"  #: counted in ``mux.drops[reason]``; ``response`` may still be set (487)


class DropReason:
    """The reasons under which ``IceLiteMux.drops`` counts dropped datagrams."""

    EMPTY: Final = "empty"
    MALFORMED_STUN: Final = "malformed_stun"
    UNEXPECTED_STUN: Final = "unexpected_stun"  # not a Binding request (responses, indications)
    MISSING_CREDENTIALS: Final = "missing_credentials"  # no USERNAME or no MESSAGE-INTEGRITY
    UNKNOWN_UFRAG: Final = "unknown_ufrag"
    BAD_INTEGRITY: Final = "bad_integrity"
    ROLE_CONFLICT: Final = "role_conflict"  # the peer claims to be controlled: answered 487
    UNKNOWN_TUPLE: Final = "unknown_tuple"
    UNKNOWN_FIRST_BYTE: Final = "unknown_first_byte"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one datagram. Decisions for DTLS and RTP are shared, never mutate them."""

    kind: Kind
    transport_id: str | None = None
    #: Bytes to send back to the datagram's source address (STUN responses), else ``None``.
    response: bytes | None = None
    #: The source address became the transport's selected tuple (first check or USE-CANDIDATE).
    selected: bool = False
    #: Why the datagram was dropped (a :class:`DropReason` value), else ``None``.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IceCredentials:
    """Local ICE username fragment and password (RFC 8839 §5.4: ice-char, 4+ and 22+ chars)."""

    ufrag: str
    pwd: str

    def __post_init__(self) -> None:
        _check_ice_chars("ufrag", self.ufrag, 4)
        _check_ice_chars("pwd", self.pwd, 22)

    @classmethod
    def generate(cls, rng: random.Random | None = None) -> IceCredentials:
        """Random credentials; ``rng`` may be a seeded ``random.Random`` in tests."""
        choose = (rng or _SYSTEM_RANDOM).choice
        alphabet = string.ascii_letters + string.digits
        return cls(
            ufrag="".join(choose(alphabet) for _ in range(8)),
            pwd="".join(choose(alphabet) for _ in range(24)),
        )


_SYSTEM_RANDOM: Final = secrets.SystemRandom()


def _check_ice_chars(name: str, value: str, min_len: int) -> None:
    if not min_len <= len(value) <= 256:
        raise ValueError(f"ICE {name} must have {min_len} to 256 characters")
    if value.strip(_ICE_CHARS):
        raise ValueError(f"ICE {name} has a character outside ALPHA / DIGIT / '+' / '/'")


class _Credentials:
    """One generation of credentials of a transport (a restart adds one)."""

    __slots__ = ("transport", "ufrag", "key", "remote_ufrag", "remote_pwd", "expires_at")

    def __init__(self, transport: _Transport, ufrag: str, pwd: str) -> None:
        self.transport = transport
        self.ufrag = ufrag
        self.key = pwd.encode("ascii")
        self.remote_ufrag: str | None = None
        self.remote_pwd: str | None = None
        #: ``None`` while current; set by a restart, after which the credentials expire.
        self.expires_at: float | None = None


class _Transport:
    __slots__ = (
        "transport_id",
        "credentials",
        "addrs",
        "selected",
        "consent_at",
        "added_at",
        "consent_expired",
        "dtls",
        "rtp",
    )

    def __init__(self, transport_id: str, added_at: float | None) -> None:
        self.transport_id = transport_id
        self.credentials: list[_Credentials] = []  # oldest first; the last one is current
        self.addrs: dict[Addr, None] = {}  # authenticated tuples, oldest first
        self.selected: Addr | None = None
        self.consent_at: float | None = None
        self.added_at = added_at
        self.consent_expired = False
        # Shared decisions: the fast path allocates nothing.
        self.dtls = Decision(Kind.DTLS, transport_id)
        self.rtp = Decision(Kind.RTP, transport_id)

    def consent_deadline(self, timeout_s: float) -> float | None:
        since = self.consent_at if self.consent_at is not None else self.added_at
        return None if since is None or self.consent_expired else since + timeout_s


class IceLiteMux:
    """Registry of ICE-lite transports keyed by local ufrag, and demultiplexer of one port.

    :param restart_grace_s: how long the credentials replaced by :meth:`restart` stay valid
        (Chromium keeps checking with the old ones for a while after ``restartIce()``).
    :param consent_timeout_s: a transport without a valid check for this long is reported
        once by :meth:`handle_timeout` (RFC 7675 uses 30 s).
    :param max_tuples: authenticated 5-tuples remembered per transport (oldest forgotten
        first, never the selected one).
    """

    def __init__(
        self,
        *,
        restart_grace_s: float = 30.0,
        consent_timeout_s: float = 30.0,
        max_tuples: int = 4,
    ) -> None:
        if restart_grace_s < 0 or consent_timeout_s <= 0 or max_tuples < 1:
            raise ValueError("restart_grace_s >= 0, consent_timeout_s > 0, max_tuples >= 1")
        self.restart_grace_s = restart_grace_s
        self.consent_timeout_s = consent_timeout_s
        self.max_tuples = max_tuples
        #: Dropped datagrams by :class:`DropReason`; shells may add their own reasons.
        self.drops: dict[str, int] = {}
        self._transports: dict[str, _Transport] = {}
        self._by_ufrag: dict[str, _Credentials] = {}
        self._by_addr: dict[Addr, _Transport] = {}
        self._drop_decisions: dict[str, Decision] = {}

    # -- registry ------------------------------------------------------------------------

    def add(
        self, transport_id: str, local_ufrag: str, local_pwd: str, *, now: float | None = None
    ) -> None:
        """Register a transport. With ``now``, its consent clock starts at once; without, at
        its first valid check. Raises ``ValueError`` if the id or the ufrag is taken."""
        if transport_id in self._transports:
            raise ValueError(f"transport {transport_id!r} already exists")
        IceCredentials(local_ufrag, local_pwd)  # validates
        if local_ufrag in self._by_ufrag:
            raise ValueError(f"ICE ufrag {local_ufrag!r} is in use")
        transport = _Transport(transport_id, now)
        creds = _Credentials(transport, local_ufrag, local_pwd)
        transport.credentials.append(creds)
        self._transports[transport_id] = transport
        self._by_ufrag[local_ufrag] = creds

    def restart(self, transport_id: str, new_ufrag: str, new_pwd: str, now: float) -> None:
        """ICE restart: new credentials become current; the previous ones stay valid until
        ``now + restart_grace_s``. Learned tuples and the selected tuple are kept."""
        transport = self._get(transport_id)
        IceCredentials(new_ufrag, new_pwd)
        if new_ufrag in self._by_ufrag:
            raise ValueError(f"ICE ufrag {new_ufrag!r} is in use")
        expires_at = now + self.restart_grace_s
        for old in transport.credentials:
            if old.expires_at is None or old.expires_at > expires_at:
                old.expires_at = expires_at
        creds = _Credentials(transport, new_ufrag, new_pwd)
        transport.credentials.append(creds)
        self._by_ufrag[new_ufrag] = creds

    def set_remote(self, transport_id: str, remote_ufrag: str, remote_pwd: str) -> None:
        """Remember the peer's credentials for the current generation (informational).

        The remote half of USERNAME is deliberately not enforced: a lite agent authenticates
        checks with its own password only, and Chromium, right after ``restartIce()`` and
        before it has our answer, checks its new candidates as ``<our old ufrag>:<its new
        ufrag>`` (measured), i.e. with a remote ufrag we have not been told yet."""
        creds = self._get(transport_id).credentials[-1]
        creds.remote_ufrag = remote_ufrag
        creds.remote_pwd = remote_pwd

    def remote_credentials(self, transport_id: str) -> tuple[str, str] | None:
        """The peer's (ufrag, pwd) of the newest generation that has them, else ``None``."""
        for creds in reversed(self._get(transport_id).credentials):
            if creds.remote_ufrag is not None and creds.remote_pwd is not None:
                return creds.remote_ufrag, creds.remote_pwd
        return None

    def remove(self, transport_id: str) -> None:
        """Forget a transport, its credentials and its tuples. Unknown ids are ignored."""
        transport = self._transports.pop(transport_id, None)
        if transport is None:
            return
        for creds in transport.credentials:
            if self._by_ufrag.get(creds.ufrag) is creds:
                del self._by_ufrag[creds.ufrag]
        for addr in transport.addrs:
            if self._by_addr.get(addr) is transport:
                del self._by_addr[addr]

    def __contains__(self, transport_id: object) -> bool:
        return transport_id in self._transports

    def __len__(self) -> int:
        return len(self._transports)

    def selected_addr(self, transport_id: str) -> Addr | None:
        """Where to send this transport's datagrams, or ``None`` before the first check."""
        transport = self._transports.get(transport_id)
        return None if transport is None else transport.selected

    def consent_at(self, transport_id: str) -> float | None:
        """``now`` of the transport's last valid check, or ``None``."""
        return self._get(transport_id).consent_at

    def local_ufrags(self, transport_id: str) -> list[str]:
        """Valid local ufrags, current last."""
        return [c.ufrag for c in self._get(transport_id).credentials]

    # -- timers --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest time at which :meth:`handle_timeout` has something to do."""
        deadlines = [
            d
            for t in self._transports.values()
            for d in (
                t.consent_deadline(self.consent_timeout_s),
                *(c.expires_at for c in t.credentials),
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def handle_timeout(self, now: float) -> list[str]:
        """Expire restarted-away credentials; return the ids of transports whose consent has
        just expired (each reported once, again only after a new valid check)."""
        expired: list[str] = []
        for transport in self._transports.values():
            if transport.credentials[0].expires_at is not None:
                keep = []
                for creds in transport.credentials:
                    if creds.expires_at is not None and creds.expires_at <= now:
                        del self._by_ufrag[creds.ufrag]
                    else:
                        keep.append(creds)
                transport.credentials = keep
            deadline = transport.consent_deadline(self.consent_timeout_s)
            if deadline is not None and deadline <= now:
                transport.consent_expired = True
                expired.append(transport.transport_id)
        return expired

    # -- datagrams -----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> Decision:
        """Classify one datagram received from ``addr`` (see the module docstring)."""
        if not data:
            return self._drop(DropReason.EMPTY)
        first = data[0]
        if 127 < first < 192:
            transport = self._by_addr.get(addr)
            return transport.rtp if transport is not None else self._drop(DropReason.UNKNOWN_TUPLE)
        if 19 < first < 64:
            transport = self._by_addr.get(addr)
            return (
                transport.dtls if transport is not None else self._drop(DropReason.UNKNOWN_TUPLE)
            )
        if first < 4:
            return self._receive_stun(data, addr, now)
        return self._drop(DropReason.UNKNOWN_FIRST_BYTE)

    def _receive_stun(self, data: bytes, addr: Addr, now: float) -> Decision:
        if len(data) < stun.HEADER_LENGTH or data[4:8] != _STUN_COOKIE:
            return self._drop(DropReason.MALFORMED_STUN)
        try:
            request = stun.parse_message(data)
        except (ValueError, struct.error):
            return self._drop(DropReason.MALFORMED_STUN)
        if (
            request.message_method != stun.Method.BINDING
            or request.message_class != stun.Class.REQUEST
        ):
            return self._drop(DropReason.UNEXPECTED_STUN)
        username = request.attributes.get("USERNAME")
        if not isinstance(username, str) or "MESSAGE-INTEGRITY" not in request.attributes:
            return self._drop(DropReason.MISSING_CREDENTIALS)
        local_ufrag = username.partition(":")[0]
        creds = self._by_ufrag.get(local_ufrag)
        if creds is None or (creds.expires_at is not None and creds.expires_at <= now):
            return self._drop(DropReason.UNKNOWN_UFRAG)
        if not request.check_message_integrity(creds.key):
            return self._drop(DropReason.BAD_INTEGRITY)
        transport = creds.transport
        if "ICE-CONTROLLED" in request.attributes:
            # A lite agent is always controlled (RFC 8445 §6.1.1): the peer must switch role.
            error = stun.Message(
                stun.Method.BINDING,
                stun.Class.ERROR,
                transaction_id=request.transaction_id,
                attributes={"ERROR-CODE": _ROLE_CONFLICT},
            )
            error.add_message_integrity(creds.key)
            self._count(DropReason.ROLE_CONFLICT)
            return Decision(
                Kind.DROP,
                transport.transport_id,
                response=bytes(error),
                reason=DropReason.ROLE_CONFLICT,
            )

        transport.consent_at = now
        transport.consent_expired = False
        self._learn(transport, addr)
        selected = False
        if transport.selected is None or (
            transport.selected != addr and "USE-CANDIDATE" in request.attributes
        ):
            transport.selected = addr
            selected = True

        response = stun.Message(
            stun.Method.BINDING,
            stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
            attributes={"XOR-MAPPED-ADDRESS": (addr[0], addr[1])},
        )
        response.add_message_integrity(creds.key)
        return Decision(
            Kind.STUN, transport.transport_id, response=bytes(response), selected=selected
        )

    def _learn(self, transport: _Transport, addr: Addr) -> None:
        if addr in transport.addrs:
            return
        previous = self._by_addr.get(addr)
        if previous is not None:
            # The tuple now authenticates for another transport (a client reusing its port).
            del previous.addrs[addr]
            if previous.selected == addr:
                previous.selected = None
        transport.addrs[addr] = None
        self._by_addr[addr] = transport
        if len(transport.addrs) > self.max_tuples:
            for old in transport.addrs:
                if old != transport.selected and old != addr:
                    del transport.addrs[old]
                    del self._by_addr[old]
                    break

    def _get(self, transport_id: str) -> _Transport:
        try:
            return self._transports[transport_id]
        except KeyError:
            raise KeyError(f"unknown transport {transport_id!r}") from None

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _drop(self, reason: str) -> Decision:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        decision = self._drop_decisions.get(reason)
        if decision is None:
            decision = self._drop_decisions[reason] = Decision(Kind.DROP, reason=reason)
        return decision
