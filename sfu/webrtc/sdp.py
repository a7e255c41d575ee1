"""Session descriptions (RFC 8866) and offer/answer for a bundle-only, ICE-lite SFU (pure).

Every participant has two transports (the LiveKit model):

- the **publisher** transport, where the client offers its tracks and the SFU answers
  receive-only: :func:`answer_publisher_offer`;
- the **subscriber** transport, where the SFU offers the tracks the participant receives and
  the client answers: :func:`offer_subscriber`, then :func:`apply_subscriber_answer`.

The model keeps the wire: :meth:`SessionDescription.parse` keeps every line in order, so
``str(SessionDescription.parse(text)) == text`` for any CRLF description, unknown attributes
included. The typed views of a :class:`MediaSection` (codecs, header extensions, ssrcs, rids,
simulcast, ICE and DTLS attributes, SCTP) are computed from its attributes when it is built,
which is also when bad input raises :class:`SdpError` (a ``ValueError``) naming the line. The
SFU's own descriptions are built from the same types, so they pass the same checks.

Nothing here does I/O, reads a clock or draws random numbers: session ids, versions, ICE
credentials and candidates are arguments.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from .errors import WebRtcError

__all__ = [
    "EXT_ABS_SEND_TIME",
    "EXT_AUDIO_LEVEL",
    "EXT_MID",
    "EXT_REPAIRED_RID",
    "EXT_RID",
    "EXT_TRANSPORT_CC",
    "Attribute",
    "CodecPolicy",
    "Connection",
    "Extmap",
    "Fingerprint",
    "Group",
    "MediaSection",
    "Msid",
    "NegotiatedCodec",
    "OfferedMedia",
    "Origin",
    "PublishedMedia",
    "PublisherNegotiation",
    "Rid",
    "RtpCodec",
    "SdpError",
    "SessionDescription",
    "Simulcast",
    "SimulcastStream",
    "SsrcAttribute",
    "SsrcGroup",
    "SubscribedMedia",
    "SubscriberNegotiation",
    "SubscriberOfferState",
    "SubscriberTrack",
    "answer_publisher_offer",
    "apply_subscriber_answer",
    "default_codecs",
    "offer_subscriber",
    "parse_fmtp",
    # The transport-only interface used by the DTLS/ICE tests (see the end of the module).
    "Offer",
    "build_answer",
    "parse_offer",
]

EXT_MID: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
EXT_RID: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXT_REPAIRED_RID: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
EXT_ABS_SEND_TIME: Final = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
EXT_TRANSPORT_CC: Final = (
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
)
EXT_AUDIO_LEVEL: Final = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

#: The header extensions the SFU can negotiate, with the ids it uses when it offers.
SUPPORTED_EXTENSIONS: Final[Mapping[str, int]] = {
    EXT_AUDIO_LEVEL: 1,
    EXT_ABS_SEND_TIME: 2,
    EXT_TRANSPORT_CC: 3,
    EXT_MID: 4,
    EXT_RID: 10,
    EXT_REPAIRED_RID: 11,
}
SUPPORTED_RTCP_FEEDBACK: Final = ("nack", "nack pli", "ccm fir", "goog-remb", "transport-cc")

DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
SETUP_ROLES: Final = ("actpass", "active", "passive", "holdconn")
RTP_PROTOCOL: Final = "UDP/TLS/RTP/SAVPF"
SCTP_PROTOCOL: Final = "UDP/DTLS/SCTP"
DATA_CHANNEL_FORMAT: Final = "webrtc-datachannel"
DEFAULT_MAX_MESSAGE_SIZE: Final = 262144
DEFAULT_SCTP_PORT: Final = 5000
OPUS_ANSWER_FMTP: Final = "minptime=10;useinbandfec=1"

_FLAGS = frozenset(
    {*DIRECTIONS, "rtcp-mux", "rtcp-rsize", "end-of-candidates", "ice-lite",
     "extmap-allow-mixed", "bundle-only"}
)
_FINGERPRINT_ALGORITHMS = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")
_LINE = re.compile(r"[a-z]=")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 token
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_RID_ID = re.compile(r"[A-Za-z0-9_-]+")
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+")
_CANDIDATE_SHAPE = (
    "'<foundation> <component> <transport> <priority> <address> <port> typ <type> ...'"
)


class SdpError(WebRtcError, ValueError):
    """A session description is malformed or cannot be negotiated.

    ``line`` is the 1-based line of the offending text, 0 when no single line is at fault."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.reason = reason
        self.line = line


# -- wire types ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribute:
    """One ``a=`` line: ``a=name`` (a flag, ``value`` None) or ``a=name:value``."""

    name: str
    value: str | None = None
    line: int = field(default=0, compare=False, repr=False)

    def __str__(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line."""

    session_id: int
    version: int
    username: str = "-"
    net_type: str = "IN"
    address_type: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str, line: int = 0) -> Origin:
        parts = value.split(" ")
        if len(parts) != 6 or not parts[1].isdigit() or not parts[2].isdigit() or "" in parts:
            raise SdpError(
                f"bad o= line {'o=' + value!r}: expected "
                "'o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>'",
                line,
            )
        return cls(int(parts[1]), int(parts[2]), parts[0], parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"o={self.username} {self.session_id} {self.version} {self.net_type} "
            f"{self.address_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A ``c=`` line."""

    address: str
    address_type: str = "IP4"
    net_type: str = "IN"

    @classmethod
    def parse(cls, value: str, line: int = 0) -> Connection:
        parts = value.split(" ")
        if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6") or not parts[2]:
            raise SdpError(
                f"bad c= line {'c=' + value!r}: expected 'c=IN IP4|IP6 <address>'", line
            )
        return cls(parts[2], parts[1], parts[0])

    @classmethod
    def for_address(cls, address: str) -> Connection:
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:  # a host name (mDNS): RFC 8866 allows FQDNs
            version = 4
        return cls(address, f"IP{version}")

    def __str__(self) -> str:
        return f"c={self.net_type} {self.address_type} {self.address}"


@dataclass(frozen=True, slots=True)
class RtpCodec:
    """An ``a=rtpmap`` with its ``a=fmtp`` and ``a=rtcp-fb`` (wildcard ``*`` ones included)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    rtcp_feedback: tuple[str, ...] = ()

    @property
    def parameters(self) -> dict[str, str]:
        return parse_fmtp(self.fmtp or "")


@dataclass(frozen=True, slots=True)
class Extmap:
    """``a=extmap:<id>[/<direction>] <uri>[ <attributes>]`` (RFC 8285)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None

    def __str__(self) -> str:
        direction = f"/{self.direction}" if self.direction else ""
        extra = f" {self.attributes}" if self.attributes else ""
        return f"{self.id}{direction} {self.uri}{extra}"


@dataclass(frozen=True, slots=True)
class SsrcAttribute:
    """``a=ssrc:<ssrc> <name>[:<value>]`` (RFC 5576)."""

    ssrc: int
    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class SsrcGroup:
    """``a=ssrc-group:<semantics> <ssrc> ...`` (FID: media then RTX; SIM: layers low to high)."""

    semantics: str
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Msid:
    """``a=msid:<stream id>[ <track id>]`` (RFC 8830)."""

    stream_id: str
    track_id: str | None = None

    def __str__(self) -> str:
        return self.stream_id if self.track_id is None else f"{self.stream_id} {self.track_id}"


@dataclass(frozen=True, slots=True)
class Rid:
    """``a=rid:<id> send|recv[ <params>]`` (RFC 8851); ``params`` kept as written."""

    id: str
    direction: str
    params: str | None = None


@dataclass(frozen=True, slots=True)
class SimulcastStream:
    """One alternative of a simulcast stream: a rid, possibly paused (``~``)."""

    rid: str
    paused: bool = False

    def __str__(self) -> str:
        return f"~{self.rid}" if self.paused else self.rid


@dataclass(frozen=True, slots=True)
class Simulcast:
    """``a=simulcast`` (RFC 8853): per direction, streams (``;``) of alternatives (``,``)."""

    send: tuple[tuple[SimulcastStream, ...], ...] = ()
    recv: tuple[tuple[SimulcastStream, ...], ...] = ()

    @classmethod
    def parse(cls, value: str, line: int = 0) -> Simulcast:
        def bad(why: str) -> SdpError:
            return SdpError(f"bad a=simulcast value {value!r}: {why}", line)

        parts = value.split(" ")
        if len(parts) not in (2, 4):
            raise bad("expected 'send|recv <streams>[ send|recv <streams>]'")
        lists: dict[str, tuple[tuple[SimulcastStream, ...], ...]] = {}
        for direction, text in zip(parts[::2], parts[1::2], strict=True):
            if direction not in ("send", "recv"):
                raise bad(f"direction {direction!r} is not send or recv")
            if direction in lists:
                raise bad(f"{direction} appears twice")
            streams = []
            for stream in text.split(";"):
                alternatives = []
                for alternative in stream.split(","):
                    rid = alternative.removeprefix("~")
                    if not _RID_ID.fullmatch(rid):
                        raise bad(f"bad rid {alternative!r}")
                    alternatives.append(SimulcastStream(rid, alternative.startswith("~")))
                streams.append(tuple(alternatives))
            lists[direction] = tuple(streams)
        return cls(lists.get("send", ()), lists.get("recv", ()))

    def __str__(self) -> str:
        parts = []
        for direction, streams in (("send", self.send), ("recv", self.recv)):
            if streams:
                text = ";".join(",".join(str(a) for a in stream) for stream in streams)
                parts.append(f"{direction} {text}")
        return " ".join(parts)

    def rids(self, direction: str) -> tuple[str, ...]:
        """The rids of one direction in stream order (alternatives in their order)."""
        streams = self.send if direction == "send" else self.recv
        return tuple(a.rid for stream in streams for a in stream)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """``a=fingerprint:<algorithm> <AB:CD:...>``."""

    algorithm: str
    value: str

    @classmethod
    def parse(cls, value: str, line: int = 0) -> Fingerprint:
        algorithm, _, digest = value.partition(" ")
        if algorithm.lower() not in _FINGERPRINT_ALGORITHMS or not _HEX_PAIRS.fullmatch(digest):
            raise SdpError(
                f"bad a=fingerprint value {value!r}: expected '<hash> <AB:CD:...>' with hash one "
                f"of {', '.join(_FINGERPRINT_ALGORITHMS)}",
                line,
            )
        return cls(algorithm, digest)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


@dataclass(frozen=True, slots=True)
class Group:
    """``a=group:<semantics> <mid> ...`` (BUNDLE, RFC 8843)."""

    semantics: str
    mids: tuple[str, ...]


def parse_fmtp(text: str) -> dict[str, str]:
    """``a=fmtp`` parameters: ``"minptime=10;useinbandfec=1"`` -> ``{"minptime": "10", ...}``.
    Keys are lower-cased; a bare token (RED's ``111/111``) maps to ``""``."""
    params: dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.strip().partition("=")
        if key:
            params[key.lower()] = value.strip()
    return params


# -- media sections and session descriptions ----------------------------------------------


class _TransportAttributes:
    """The ICE and DTLS attributes that may appear at session or media level."""

    __slots__ = ("candidates", "end_of_candidates", "extmap_allow_mixed", "fingerprints",
                 "ice_options", "ice_pwd", "ice_ufrag", "setup")

    def __init__(self) -> None:
        self.ice_ufrag: str | None = None
        self.ice_pwd: str | None = None
        self.ice_options: tuple[str, ...] = ()
        self.fingerprints: list[Fingerprint] = []
        self.setup: str | None = None
        self.candidates: list[str] = []
        self.end_of_candidates = False
        self.extmap_allow_mixed = False

    def take(self, attr: Attribute, seen: dict[str, int]) -> bool:
        """Interpret ``attr`` if it is one of ours; ``seen`` maps single-use names to lines."""
        name, value = attr.name, attr.value or ""
        if name in ("ice-ufrag", "ice-pwd", "setup", "ice-options"):
            _once(attr, seen)
            if name == "ice-ufrag":
                self.ice_ufrag = _ice_chars(attr, 4)
            elif name == "ice-pwd":
                self.ice_pwd = _ice_chars(attr, 22)
            elif name == "ice-options":
                self.ice_options = tuple(value.split())
                if not self.ice_options:
                    raise SdpError("a=ice-options needs at least one option", attr.line)
            elif value not in SETUP_ROLES:
                raise SdpError(
                    f"bad a=setup value {value!r}: expected one of {', '.join(SETUP_ROLES)}",
                    attr.line,
                )
            else:
                self.setup = value
        elif name == "fingerprint":
            self.fingerprints.append(Fingerprint.parse(value, attr.line))
        elif name == "candidate":
            reason = _candidate_problem(value)
            if reason:
                raise SdpError(f"bad a=candidate value {value!r}: {reason}", attr.line)
            self.candidates.append(value)
        elif name == "end-of-candidates":
            self.end_of_candidates = True
        elif name == "extmap-allow-mixed":
            self.extmap_allow_mixed = True
        else:
            return False
        return True


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One m-section: the m-line, its other lines (``c=``, ``b=``...) and its attributes in
    order. The fields after ``attributes`` are views computed from them."""

    kind: str
    port: int
    proto: str
    fmts: tuple[str, ...]
    lines: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    line: int = field(default=0, compare=False, repr=False)

    connection: Connection | None = field(init=False, compare=False, repr=False)
    mid: str | None = field(init=False, compare=False, repr=False)
    #: The direction attribute, ``None`` if absent (which means sendrecv).
    direction: str | None = field(init=False, compare=False, repr=False)
    codecs: tuple[RtpCodec, ...] = field(init=False, compare=False, repr=False)
    extmaps: tuple[Extmap, ...] = field(init=False, compare=False, repr=False)
    extmap_allow_mixed: bool = field(init=False, compare=False, repr=False)
    ssrcs: tuple[SsrcAttribute, ...] = field(init=False, compare=False, repr=False)
    ssrc_groups: tuple[SsrcGroup, ...] = field(init=False, compare=False, repr=False)
    msids: tuple[Msid, ...] = field(init=False, compare=False, repr=False)
    rids: tuple[Rid, ...] = field(init=False, compare=False, repr=False)
    simulcast: Simulcast | None = field(init=False, compare=False, repr=False)
    ice_ufrag: str | None = field(init=False, compare=False, repr=False)
    ice_pwd: str | None = field(init=False, compare=False, repr=False)
    ice_options: tuple[str, ...] = field(init=False, compare=False, repr=False)
    fingerprints: tuple[Fingerprint, ...] = field(init=False, compare=False, repr=False)
    setup: str | None = field(init=False, compare=False, repr=False)
    candidates: tuple[str, ...] = field(init=False, compare=False, repr=False)
    end_of_candidates: bool = field(init=False, compare=False, repr=False)
    rtcp_mux: bool = field(init=False, compare=False, repr=False)
    rtcp_rsize: bool = field(init=False, compare=False, repr=False)
    bundle_only: bool = field(init=False, compare=False, repr=False)
    sctp_port: int | None = field(init=False, compare=False, repr=False)
    max_message_size: int | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_m_line(self.kind, self.port, self.proto, self.fmts, self.line)
        connection = None
        for text in self.lines:
            line_type, _, line_value = text.partition("=")
            if line_type == "c":
                connection = Connection.parse(line_value, self.line)
            elif line_type not in ("i", "b", "k"):
                raise SdpError(f"{line_type}= is not allowed in an m-section", self.line)
        is_rtp = "RTP/" in self.proto
        transport = _TransportAttributes()
        seen: dict[str, int] = {}
        flags: set[str] = set()
        mid = direction = None
        rtpmaps: dict[int, tuple[str, int, int | None]] = {}
        fmtps: dict[int, str] = {}
        feedback: dict[int, list[str]] = {}
        any_feedback: list[str] = []
        extmaps: dict[int, Extmap] = {}
        ssrcs: list[SsrcAttribute] = []
        groups: list[SsrcGroup] = []
        msids: list[Msid] = []
        rids: dict[str, Rid] = {}
        simulcast: tuple[Simulcast, int] | None = None
        sctp_port = max_message_size = None
        for attr in self.attributes:
            name, value = attr.name, attr.value
            if name in _FLAGS and value is not None:
                raise SdpError(f"a={name} takes no value, got {value!r}", attr.line)
            if transport.take(attr, seen):
                continue
            if name in DIRECTIONS:
                if direction is not None:
                    raise SdpError(
                        f"second direction attribute a={name} (already a={direction})", attr.line
                    )
                direction = name
            elif name in _FLAGS:
                flags.add(name)
            elif value is None:
                if name in ("mid", "rtpmap", "fmtp", "rtcp-fb", "extmap", "ssrc", "ssrc-group",
                            "msid", "rid", "simulcast", "sctp-port", "max-message-size"):
                    raise SdpError(f"a={name} needs a value", attr.line)
            elif name == "mid":
                _once(attr, seen)
                if not value or " " in value:
                    raise SdpError(f"bad a=mid value {value!r}", attr.line)
                mid = value
            elif name == "rtpmap":
                pt = _payload_type(attr, value.partition(" ")[0], self.fmts)
                if pt in rtpmaps:
                    raise SdpError(f"second a=rtpmap for payload type {pt}", attr.line)
                rtpmaps[pt] = _rtpmap(attr)
            elif name == "fmtp":
                pt_text, _, params = value.partition(" ")
                pt = _payload_type(attr, pt_text, self.fmts)
                if pt in fmtps:
                    raise SdpError(f"second a=fmtp for payload type {pt}", attr.line)
                if not params:
                    raise SdpError(f"bad a=fmtp value {value!r}: no parameters", attr.line)
                fmtps[pt] = params
            elif name == "rtcp-fb":
                pt_text, _, fb = value.partition(" ")
                if not fb:
                    raise SdpError(
                        f"bad a=rtcp-fb value {value!r}: expected '<payload type> <feedback>'",
                        attr.line,
                    )
                if pt_text == "*":
                    any_feedback.append(fb)
                else:
                    feedback.setdefault(_payload_type(attr, pt_text, self.fmts), []).append(fb)
            elif name == "extmap":
                extmap = _extmap(attr)
                if extmap.id in extmaps:
                    raise SdpError(f"second a=extmap with id {extmap.id}", attr.line)
                extmaps[extmap.id] = extmap
            elif name == "ssrc":
                ssrcs.append(_ssrc_attribute(attr))
            elif name == "ssrc-group":
                groups.append(_ssrc_group(attr))
            elif name == "msid":
                msids.append(_msid(attr))
            elif name == "rid":
                rid = _rid(attr)
                if rid.id in rids:
                    raise SdpError(f"second a=rid for rid {rid.id!r}", attr.line)
                rids[rid.id] = rid
            elif name == "simulcast":
                if simulcast is not None:
                    raise SdpError("second a=simulcast", attr.line)
                simulcast = Simulcast.parse(value, attr.line), attr.line
            elif name in ("sctp-port", "max-message-size"):
                _once(attr, seen)
                number = _int(value, 0, 65535 if name == "sctp-port" else 2**53)
                if number is None:
                    raise SdpError(f"bad a={name} value {value!r}", attr.line)
                if name == "sctp-port":
                    sctp_port = number
                else:
                    max_message_size = number
        if simulcast is not None:
            for direction_name in ("send", "recv"):
                for rid_id in simulcast[0].rids(direction_name):
                    if rid_id not in rids or rids[rid_id].direction != direction_name:
                        raise SdpError(
                            f"a=simulcast names rid {rid_id!r} that has no "
                            f"a=rid:{rid_id} {direction_name}",
                            simulcast[1],
                        )
        codecs = []
        if is_rtp:
            for fmt in self.fmts:
                pt = int(fmt)
                if pt in rtpmaps:
                    name_, clock_rate, channels = rtpmaps[pt]
                    fbs = tuple(feedback.get(pt, ())) + tuple(any_feedback)
                    codecs.append(RtpCodec(pt, name_, clock_rate, channels, fmtps.get(pt), fbs))
        views: dict[str, object] = {
            "connection": connection,
            "mid": mid,
            "direction": direction,
            "codecs": tuple(codecs),
            "extmaps": tuple(extmaps.values()),
            "extmap_allow_mixed": transport.extmap_allow_mixed,
            "ssrcs": tuple(ssrcs),
            "ssrc_groups": tuple(groups),
            "msids": tuple(msids),
            "rids": tuple(rids.values()),
            "simulcast": simulcast[0] if simulcast else None,
            "ice_ufrag": transport.ice_ufrag,
            "ice_pwd": transport.ice_pwd,
            "ice_options": transport.ice_options,
            "fingerprints": tuple(transport.fingerprints),
            "setup": transport.setup,
            "candidates": tuple(transport.candidates),
            "end_of_candidates": transport.end_of_candidates,
            "rtcp_mux": "rtcp-mux" in flags,
            "rtcp_rsize": "rtcp-rsize" in flags,
            "bundle_only": "bundle-only" in flags,
            "sctp_port": sctp_port,
            "max_message_size": max_message_size,
        }
        for name, view in views.items():
            object.__setattr__(self, name, view)

    def __str__(self) -> str:
        head = f"m={self.kind} {self.port} {self.proto} {' '.join(self.fmts)}"
        return "\r\n".join([head, *self.lines, *(str(a) for a in self.attributes)])

    @property
    def effective_direction(self) -> str:
        return self.direction or "sendrecv"

    def codec(self, payload_type: int) -> RtpCodec | None:
        return next((c for c in self.codecs if c.payload_type == payload_type), None)

    def rtx_for(self, payload_type: int) -> RtpCodec | None:
        """The ``rtx`` codec whose ``apt`` is ``payload_type``."""
        return next(
            (
                c for c in self.codecs
                if c.name.lower() == "rtx" and c.parameters.get("apt") == str(payload_type)
            ),
            None,
        )


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole description: ``v=0``, the ``o=`` and ``s=`` lines, the other session lines
    (``t=`` at least), the session attributes and the m-sections, all in order."""

    origin: Origin
    name: str = "-"
    lines: tuple[str, ...] = ("t=0 0",)
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaSection, ...] = ()

    groups: tuple[Group, ...] = field(init=False, compare=False, repr=False)
    ice_lite: bool = field(init=False, compare=False, repr=False)
    ice_ufrag: str | None = field(init=False, compare=False, repr=False)
    ice_pwd: str | None = field(init=False, compare=False, repr=False)
    ice_options: tuple[str, ...] = field(init=False, compare=False, repr=False)
    fingerprints: tuple[Fingerprint, ...] = field(init=False, compare=False, repr=False)
    setup: str | None = field(init=False, compare=False, repr=False)
    extmap_allow_mixed: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not any(line.startswith("t=") for line in self.lines):
            raise SdpError("no t= line")
        transport = _TransportAttributes()
        seen: dict[str, int] = {}
        groups: list[tuple[Group, int]] = []
        ice_lite = False
        for attr in self.attributes:
            if attr.name in _FLAGS and attr.value is not None:
                raise SdpError(f"a={attr.name} takes no value, got {attr.value!r}", attr.line)
            if transport.take(attr, seen):
                continue
            if attr.name == "ice-lite":
                ice_lite = True
            elif attr.name == "group":
                semantics, *mids = (attr.value or "").split(" ")
                if not _TOKEN.fullmatch(semantics) or "" in mids:
                    raise SdpError(f"bad a=group value {attr.value!r}", attr.line)
                groups.append((Group(semantics, tuple(mids)), attr.line))
        first_line: dict[str, int] = {}
        for section in self.media:
            if section.mid is None:
                continue
            if section.mid in first_line:
                raise SdpError(
                    f"second m-section with a=mid:{section.mid} "
                    f"(the first is on line {first_line[section.mid]})",
                    _attribute_line(section, "mid"),
                )
            first_line[section.mid] = section.line
        for group, line in groups:
            for mid in group.mids:
                if mid not in first_line:
                    raise SdpError(
                        f"a=group:{group.semantics} names mid {mid!r} that no m-section has", line
                    )
        views: dict[str, object] = {
            "groups": tuple(g for g, _ in groups),
            "ice_lite": ice_lite,
            "ice_ufrag": transport.ice_ufrag,
            "ice_pwd": transport.ice_pwd,
            "ice_options": transport.ice_options,
            "fingerprints": tuple(transport.fingerprints),
            "setup": transport.setup,
            "extmap_allow_mixed": transport.extmap_allow_mixed,
        }
        for name, view in views.items():
            object.__setattr__(self, name, view)

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Parse SDP (CRLF or LF line ends). Raises :class:`SdpError` naming the bad line."""
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        while lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise SdpError("empty session description")
        for number, line in enumerate(lines, 1):
            if not _LINE.match(line):
                raise SdpError(f"expected '<type>=<value>', got {line!r}", number)
        if lines[0] != "v=0":
            raise SdpError(f"expected 'v=0', got {lines[0]!r}", 1)
        for number, expected in ((2, "o"), (3, "s")):
            if len(lines) < number or lines[number - 1][0] != expected:
                got = repr(lines[number - 1]) if len(lines) >= number else "the end"
                raise SdpError(f"expected an {expected}= line, got {got}", number)
        origin = Origin.parse(lines[1][2:], 2)
        session_lines: list[str] = []
        session_attributes: list[Attribute] = []
        media: list[MediaSection] = []
        m_line: tuple[str, int, str, tuple[str, ...], int] | None = None
        media_lines: list[str] = []
        media_attributes: list[Attribute] = []

        def close_section() -> None:
            if m_line is not None:
                kind, port, proto, fmts, at = m_line
                media.append(
                    MediaSection(kind, port, proto, fmts, tuple(media_lines),
                                 tuple(media_attributes), at)
                )
                media_lines.clear()
                media_attributes.clear()

        for number, line in enumerate(lines[3:], 4):
            kind, value = line[0], line[2:]
            if kind in "vos":
                raise SdpError(f"unexpected {kind}= line {line!r}", number)
            if kind == "m":
                if m_line is None and not any(s.startswith("t=") for s in session_lines):
                    raise SdpError("m= line before any t= line", number)
                close_section()
                m_line = (*_parse_m_line(value, number), number)
            elif kind == "a":
                name, colon, attr_value = value.partition(":")
                attribute = Attribute(name, attr_value if colon else None, number)
                if not name:
                    raise SdpError(f"bad attribute line {line!r}", number)
                (media_attributes if m_line else session_attributes).append(attribute)
            elif m_line is not None:
                if media_attributes:
                    raise SdpError(f"{kind}= line after the m-section's attributes", number)
                if kind not in "ibck":
                    raise SdpError(f"{kind}= is not allowed in an m-section", number)
                if kind == "c":
                    Connection.parse(value, number)
                media_lines.append(line)
            else:
                if session_attributes:
                    raise SdpError(f"{kind}= line after the session attributes", number)
                if kind == "c":
                    Connection.parse(value, number)
                session_lines.append(line)
        if m_line is None and not any(s.startswith("t=") for s in session_lines):
            raise SdpError("no t= line", len(lines))
        close_section()
        return cls(origin, lines[2][2:], tuple(session_lines), tuple(session_attributes),
                   tuple(media))

    def __str__(self) -> str:
        head = ["v=0", str(self.origin), f"s={self.name}", *self.lines]
        head += [str(a) for a in self.attributes]
        return "\r\n".join(head + [str(m) for m in self.media]) + "\r\n"

    @property
    def bundle(self) -> tuple[str, ...] | None:
        """The mids of the first ``a=group:BUNDLE``, ``None`` without one."""
        return next((g.mids for g in self.groups if g.semantics == "BUNDLE"), None)

    def section(self, mid: str) -> MediaSection | None:
        return next((m for m in self.media if m.mid == mid), None)


# -- codec policy -------------------------------------------------------------------------


_CANONICAL_CODECS: Final = {"opus": "opus", "vp8": "VP8", "h264": "H264"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CodecPolicy:
    """What the SFU negotiates. It forwards without decoding, so publishers and subscribers
    must share a codec: keep the lists short.

    - ``audio_codecs``: only ``"opus"`` (48000/2) is supported; ``()`` refuses audio.
    - ``video_codecs``: ``"VP8"`` and/or ``"H264"``, in the order the SFU offers them to
      subscribers. A publisher's answer keeps the publisher's own order among the allowed
      codecs, so a client that prefers H.264 (``setCodecPreferences``) publishes H.264.
    - ``allow_dtx`` / ``allow_stereo``: answer ``usedtx=1`` / ``stereo=1`` when the offer has it.
    - ``h264_profile_level_ids``: accepted H.264 profiles (packetization-mode=1 only).
    - ``rtcp_feedback``: kept ``a=rtcp-fb`` types (a subset of nack, nack pli, ccm fir,
      goog-remb, transport-cc).
    - ``header_extensions``: negotiated URIs (a subset of ``SUPPORTED_EXTENSIONS``); any other
      extension is refused.
    """

    audio_codecs: tuple[str, ...] = ("opus",)
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    allow_dtx: bool = True
    allow_stereo: bool = False
    h264_profile_level_ids: tuple[str, ...] = ("42e01f", "42001f")
    rtcp_feedback: tuple[str, ...] = SUPPORTED_RTCP_FEEDBACK
    header_extensions: tuple[str, ...] = tuple(SUPPORTED_EXTENSIONS)

    def __post_init__(self) -> None:
        for kind, names, allowed in (
            ("audio", self.audio_codecs, ("opus",)),
            ("video", self.video_codecs, ("VP8", "H264")),
        ):
            canonical = tuple(_CANONICAL_CODECS.get(n.lower(), n) for n in names)
            for name in canonical:
                if name not in allowed:
                    raise ValueError(
                        f"unsupported {kind} codec {name!r}: expected {' or '.join(allowed)}"
                    )
            if len(set(canonical)) != len(canonical):
                raise ValueError(f"{kind}_codecs lists a codec twice: {names!r}")
            object.__setattr__(self, f"{kind}_codecs", canonical)
        for plid in self.h264_profile_level_ids:
            if not re.fullmatch(r"[0-9A-Fa-f]{6}", plid):
                raise ValueError(f"bad H.264 profile-level-id {plid!r}: expected 6 hex digits")
        for fb in self.rtcp_feedback:
            if fb not in SUPPORTED_RTCP_FEEDBACK:
                raise ValueError(f"unsupported rtcp feedback {fb!r}")
        for uri in self.header_extensions:
            if uri not in SUPPORTED_EXTENSIONS:
                raise ValueError(f"unsupported header extension {uri!r}")

    def accepts(self, kind: str, codec: RtpCodec) -> bool:
        """Whether a (non-RTX) codec of an offer is one the SFU forwards."""
        name, params = codec.name.lower(), codec.parameters
        if kind == "audio":
            return (
                name == "opus" and "opus" in self.audio_codecs
                and codec.clock_rate == 48000 and codec.channels == 2
            )
        if kind != "video" or codec.clock_rate != 90000:
            return False
        if name == "vp8":
            return "VP8" in self.video_codecs
        if name == "h264":
            return (
                "H264" in self.video_codecs
                and params.get("packetization-mode") == "1"
                and params.get("profile-level-id", "").lower()
                in (p.lower() for p in self.h264_profile_level_ids)
            )
        return False


# -- negotiation results ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NegotiatedCodec:
    """A codec both sides agreed on, with its RTX payload type if RTX was agreed too."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str = ""
    rtx_payload_type: int | None = None
    rtcp_feedback: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PublishedMedia:
    """One accepted m-section of a publisher's offer."""

    mid: str
    kind: str
    #: The direction of the SFU's answer: ``recvonly``, or ``inactive`` if the client sends
    #: nothing.
    direction: str
    codecs: tuple[NegotiatedCodec, ...]
    #: uri -> id, as the publisher numbered them.
    extension_ids: Mapping[str, int]
    #: The simulcast rids, in ``a=simulcast`` order (usually lowest layer first).
    rids: tuple[str, ...] = ()
    paused_rids: tuple[str, ...] = ()
    #: Media SSRCs (``a=ssrc-group:SIM`` order when present), empty with rid-based simulcast.
    ssrcs: tuple[int, ...] = ()
    #: media SSRC -> RTX SSRC, from ``a=ssrc-group:FID``.
    rtx_ssrcs: Mapping[int, int] = field(default_factory=dict)
    msid: Msid | None = None


@dataclass(frozen=True, slots=True)
class PublisherNegotiation:
    """What :func:`answer_publisher_offer` agreed to, per mid in offer order."""

    media: Mapping[str, PublishedMedia]
    rejected_mids: tuple[str, ...]
    data_mid: str | None
    #: The client's SCTP port (the answer repeats it) and max-message-size.
    sctp_port: int | None
    max_message_size: int | None
    remote_ice_ufrag: str
    remote_ice_pwd: str
    remote_fingerprints: tuple[Fingerprint, ...]

    @property
    def data_channel(self) -> bool:
        return self.data_mid is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberTrack:
    """A track the SFU sends to a subscriber: its m-section, identity and payload types."""

    mid: str
    kind: str
    stream_id: str
    track_id: str
    ssrc: int
    rtx_ssrc: int | None = None
    codecs: tuple[NegotiatedCodec, ...]
    #: RTCP CNAME; defaults to ``stream_id`` (one CNAME per publisher keeps lip sync).
    cname: str | None = None

    def __post_init__(self) -> None:
        who = f"track {self.track_id!r}"
        if self.kind not in ("audio", "video"):
            raise ValueError(f"{who}: kind {self.kind!r} is not audio or video")
        for label, value in (("mid", self.mid), ("stream_id", self.stream_id),
                             ("track_id", self.track_id), ("cname", self.cname or "x")):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"{who}: bad {label} {value!r}")
        for label, ssrc in (("ssrc", self.ssrc), ("rtx_ssrc", self.rtx_ssrc)):
            if ssrc is not None and not 0 <= ssrc < 2**32:
                raise ValueError(f"{who}: {label} {ssrc} is not a 32-bit unsigned integer")
        if not self.codecs:
            raise ValueError(f"{who}: no codecs")
        pts = [c.payload_type for c in self.codecs]
        pts += [c.rtx_payload_type for c in self.codecs if c.rtx_payload_type is not None]
        if len(set(pts)) != len(pts) or not all(0 <= pt <= 127 for pt in pts):
            raise ValueError(f"{who}: payload types {pts} are not distinct values in 0..127")
        if self.rtx_ssrc is not None:
            if self.kind != "video":
                raise ValueError(f"{who}: rtx_ssrc is for video tracks")
            if not any(c.rtx_payload_type is not None for c in self.codecs):
                raise ValueError(f"{who}: rtx_ssrc given but no codec has an RTX payload type")
            if self.rtx_ssrc == self.ssrc:
                raise ValueError(f"{who}: rtx_ssrc equals ssrc")


@dataclass(frozen=True, slots=True)
class OfferedMedia:
    """An m-section of a subscriber offer. ``track`` is ``None`` once it is inactive (its
    track was removed) and for the data channel (kind ``application``)."""

    mid: str
    kind: str
    track: SubscriberTrack | None
    codecs: tuple[NegotiatedCodec, ...] = ()
    extension_ids: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubscriberOfferState:
    """The last offer of a subscriber transport; pass it as ``previous`` to the next one."""

    session_id: int
    version: int
    media: tuple[OfferedMedia, ...]
    sdp: str

    def reusable_mid(self, kind: str) -> str | None:
        """The first inactive m-section of ``kind``, whose mid a new track may take."""
        return next((m.mid for m in self.media if m.kind == kind and m.track is None), None)

    def next_mid(self, taken: Iterable[str] = ()) -> str:
        """The smallest number, as a string, that no m-section (nor ``taken``) uses."""
        used = {m.mid for m in self.media} | set(taken)
        return next(str(n) for n in range(len(used) + 1) if str(n) not in used)


@dataclass(frozen=True, slots=True)
class SubscribedMedia:
    """One m-section of a subscriber answer."""

    mid: str
    kind: str
    track: SubscriberTrack | None
    #: The client's direction: ``recvonly`` while it receives, ``inactive``, or
    #: ``rejected`` if it set the port to 0.
    direction: str
    #: The offered codecs the client accepted, in its order (its fmtp, agreed RTX).
    codecs: tuple[NegotiatedCodec, ...]
    extension_ids: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class SubscriberNegotiation:
    """What a subscriber's answer agreed to, per mid in offer order."""

    version: int
    media: Mapping[str, SubscribedMedia]
    data_mid: str | None
    sctp_port: int | None
    max_message_size: int | None
    remote_ice_ufrag: str
    remote_ice_pwd: str
    remote_fingerprints: tuple[Fingerprint, ...]
    remote_setup: str

    @property
    def data_channel(self) -> bool:
        return self.data_mid is not None


# -- publisher: the client offers, the SFU answers ----------------------------------------


def answer_publisher_offer(
    offer_text: str,
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprints: Sequence[tuple[str, str]],
    candidates: Sequence[str],
    policy: CodecPolicy | None = None,
    session_id: int = 1,
    version: int = 1,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[str, PublisherNegotiation]:
    """Answer a publisher's offer as an ICE-lite, DTLS-passive, receive-only SFU.

    ``fingerprints`` are ``(algorithm, "AB:CD:...")`` of the SFU's certificate; ``candidates``
    are full candidate values (``"1 1 udp 2130706431 127.0.0.1 7882 typ host"``), the first one
    being the default (m-line port and ``c=``). ``session_id``/``version`` make the ``o=`` line:
    keep the id and increase the version when answering a re-offer.

    Media the SFU cannot take (no allowed codec, no rtcp-mux, not bundled, a second data
    channel...) is rejected: port 0, ``a=mid`` kept, ``a=inactive``. Raises :class:`SdpError`
    if the offer is malformed or cannot be answered at all (no BUNDLE, no ICE credentials or
    fingerprint, a DTLS role other than actpass/active)."""
    policy = policy or CodecPolicy()
    _check_local(ice_ufrag, ice_pwd, fingerprints, candidates)
    offer = SessionDescription.parse(offer_text)
    remote = _remote_transport(offer, "offer")
    if remote.setup not in ("actpass", "active"):
        raise SdpError(
            f"a=setup:{remote.setup} in the offer: the SFU is always the DTLS server, "
            "so the offer must be actpass or active",
            remote.setup_line,
        )
    bundle = offer.bundle
    if bundle is None:
        raise SdpError("the offer has no a=group:BUNDLE: the SFU bundles all media on one port")
    local = _LocalTransport(ice_ufrag, ice_pwd, fingerprints, candidates, "passive")
    sections: list[MediaSection] = []
    accepted_mids: list[str] = []
    rejected: list[str] = []
    media: dict[str, PublishedMedia] = {}
    data_mid: str | None = None
    for offered in offer.media:
        if offered.mid is None:
            raise SdpError(f"the m={offered.kind} section has no a=mid", offered.line)
        answer: MediaSection | None = None
        usable = offered.mid in bundle and (offered.port != 0 or offered.bundle_only)
        if usable and offered.kind in ("audio", "video") and offered.rtcp_mux:
            if "RTP/SAVPF" in offered.proto:
                answer, published = _answer_rtp(offered, local, policy)
                if published is not None:
                    media[offered.mid] = published
        elif usable and offered.kind == "application" and data_mid is None:
            if (
                offered.proto in (SCTP_PROTOCOL, "TCP/DTLS/SCTP")
                and offered.fmts == (DATA_CHANNEL_FORMAT,)
                and offered.sctp_port is not None
            ):
                answer = _data_section(
                    offered.mid, offered.sctp_port, max_message_size, local, offered.proto
                )
                data_mid = offered.mid
        if answer is None:
            rejected.append(offered.mid)
            answer = _rejected_section(offered)
        else:
            accepted_mids.append(offered.mid)
        sections.append(answer)
    attributes = [Attribute("ice-lite")]
    if accepted_mids:
        attributes.append(Attribute("group", " ".join(["BUNDLE", *accepted_mids])))
    if offer.extmap_allow_mixed:
        attributes.append(Attribute("extmap-allow-mixed"))
    description = SessionDescription(
        Origin(session_id, version), "-", ("t=0 0",), tuple(attributes), tuple(sections)
    )
    data_section = offer.section(data_mid) if data_mid else None
    negotiation = PublisherNegotiation(
        media=media,
        rejected_mids=tuple(rejected),
        data_mid=data_mid,
        sctp_port=data_section.sctp_port if data_section else None,
        max_message_size=data_section.max_message_size if data_section else None,
        remote_ice_ufrag=remote.ice_ufrag,
        remote_ice_pwd=remote.ice_pwd,
        remote_fingerprints=remote.fingerprints,
    )
    return str(description), negotiation


def _answer_rtp(
    offered: MediaSection, local: _LocalTransport, policy: CodecPolicy
) -> tuple[MediaSection | None, PublishedMedia | None]:
    kind = offered.kind
    extmaps = [e for e in offered.extmaps if e.uri in policy.header_extensions]
    uris = {e.uri for e in extmaps}
    chosen: list[NegotiatedCodec] = []
    for codec in offered.codecs:
        if codec.name.lower() == "rtx" or not policy.accepts(kind, codec):
            continue
        rtx = offered.rtx_for(codec.payload_type)
        chosen.append(
            NegotiatedCodec(
                payload_type=codec.payload_type,
                name=codec.name,
                clock_rate=codec.clock_rate,
                channels=codec.channels,
                fmtp=_answer_fmtp(codec, policy),
                rtx_payload_type=rtx.payload_type if rtx else None,
                rtcp_feedback=_feedback(codec.rtcp_feedback, policy, uris),
            )
        )
    if not chosen:
        return None, None
    direction = "recvonly" if offered.effective_direction in ("sendrecv", "sendonly") else (
        "inactive"
    )
    attributes = local.attributes(offered.mid or "")
    attributes += [Attribute("extmap", str(_answer_extmap(e))) for e in extmaps]
    if offered.extmap_allow_mixed:
        attributes.append(Attribute("extmap-allow-mixed"))
    attributes.append(Attribute(direction))
    attributes.append(Attribute("rtcp-mux"))
    if offered.rtcp_rsize:
        attributes.append(Attribute("rtcp-rsize"))
    attributes += _codec_attributes(chosen)
    rids: tuple[str, ...] = ()
    paused: tuple[str, ...] = ()
    simulcast = offered.simulcast
    if simulcast is not None and simulcast.send and EXT_RID in uris and direction == "recvonly":
        rids = simulcast.rids("send")
        paused = tuple(a.rid for stream in simulcast.send for a in stream if a.paused)
        attributes += [Attribute("rid", f"{rid} recv") for rid in rids]
        attributes.append(Attribute("simulcast", str(Simulcast(recv=simulcast.send))))
    answer = MediaSection(kind, local.port, offered.proto, _payload_types(chosen),
                          (str(local.connection),), tuple(attributes))
    ssrcs, rtx_ssrcs = _ssrc_layout(offered)
    msid = offered.msids[0] if offered.msids else _ssrc_msid(offered, ssrcs)
    published = PublishedMedia(
        mid=offered.mid or "",
        kind=kind,
        direction=direction,
        codecs=tuple(chosen),
        extension_ids={e.uri: e.id for e in extmaps},
        rids=rids,
        paused_rids=paused,
        ssrcs=ssrcs,
        rtx_ssrcs=rtx_ssrcs,
        msid=msid,
    )
    return answer, published


def _answer_fmtp(codec: RtpCodec, policy: CodecPolicy) -> str:
    params = codec.parameters
    name = codec.name.lower()
    if name == "opus":
        fmtp = OPUS_ANSWER_FMTP
        if policy.allow_stereo and params.get("stereo") == "1":
            fmtp += ";stereo=1"
        if policy.allow_dtx and params.get("usedtx") == "1":
            fmtp += ";usedtx=1"
        return fmtp
    if name == "h264":
        return (
            "level-asymmetry-allowed=1;packetization-mode=1;"
            f"profile-level-id={params['profile-level-id']}"
        )
    return ""


def _feedback(offered: Iterable[str], policy: CodecPolicy, uris: set[str]) -> tuple[str, ...]:
    kept: list[str] = []
    for fb in offered:
        if fb not in policy.rtcp_feedback or fb in kept:
            continue
        if fb == "transport-cc" and EXT_TRANSPORT_CC not in uris:
            continue
        if fb == "goog-remb" and EXT_ABS_SEND_TIME not in uris:
            continue
        kept.append(fb)
    return tuple(kept)


def _answer_extmap(extmap: Extmap) -> Extmap:
    flipped = {"sendonly": "recvonly", "recvonly": "sendonly"}
    direction = flipped.get(extmap.direction or "", extmap.direction)
    return Extmap(extmap.id, extmap.uri, direction)


def _ssrc_layout(section: MediaSection) -> tuple[tuple[int, ...], dict[int, int]]:
    fid = {
        g.ssrcs[0]: g.ssrcs[1]
        for g in section.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) == 2
    }
    sim = next((g.ssrcs for g in section.ssrc_groups if g.semantics == "SIM"), None)
    if sim is not None:
        media = sim
    else:
        repairs = set(fid.values())
        media = tuple(dict.fromkeys(a.ssrc for a in section.ssrcs if a.ssrc not in repairs))
    return media, {ssrc: fid[ssrc] for ssrc in media if ssrc in fid}


def _ssrc_msid(section: MediaSection, ssrcs: tuple[int, ...]) -> Msid | None:
    for attr in section.ssrcs:
        if attr.name == "msid" and attr.value and attr.ssrc in ssrcs:
            stream_id, _, track_id = attr.value.partition(" ")
            return Msid(stream_id, track_id or None)
    return None


def _rejected_section(offered: MediaSection) -> MediaSection:
    return MediaSection(
        offered.kind, 0, offered.proto, offered.fmts[:1], ("c=IN IP4 0.0.0.0",),
        (Attribute("mid", offered.mid), Attribute("inactive")),
    )


# -- subscriber: the SFU offers, the client answers ---------------------------------------


def default_codecs(kind: str, policy: CodecPolicy | None = None) -> tuple[NegotiatedCodec, ...]:
    """Codecs with Chromium's usual payload types, in policy order: Opus 111; VP8 96 (RTX
    97); H.264 with the policy's first profile-level-id 102 (RTX 103)."""
    policy = policy or CodecPolicy()
    video_fb = tuple(fb for fb in ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
                     if fb in policy.rtcp_feedback)
    if kind == "audio":
        audio_fb = ("transport-cc",) if "transport-cc" in policy.rtcp_feedback else ()
        if "opus" not in policy.audio_codecs:
            return ()
        return (NegotiatedCodec(111, "opus", 48000, 2, OPUS_ANSWER_FMTP, None, audio_fb),)
    if kind != "video":
        raise ValueError(f"kind {kind!r} is not audio or video")
    plid = policy.h264_profile_level_ids[0] if policy.h264_profile_level_ids else "42e01f"
    known = {
        "VP8": NegotiatedCodec(96, "VP8", 90000, None, "", 97, video_fb),
        "H264": NegotiatedCodec(
            102, "H264", 90000, None,
            f"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={plid}",
            103, video_fb,
        ),
    }
    return tuple(known[name] for name in policy.video_codecs)


def offer_subscriber(
    tracks: Sequence[SubscriberTrack],
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprints: Sequence[tuple[str, str]],
    candidates: Sequence[str],
    policy: CodecPolicy | None = None,
    session_id: int,
    version: int,
    previous: SubscriberOfferState | None,
    data_channel: bool = False,
    sctp_port: int = DEFAULT_SCTP_PORT,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[str, SubscriberOfferState]:
    """The SFU's offer on a subscriber transport: one ``sendonly`` m-section per track.

    m-sections are never removed: those of ``previous`` come first, in order; a previous
    track missing from ``tracks`` leaves its m-section ``a=inactive`` (bundled, port kept, no
    msid or ssrc), and a track whose ``mid`` is an existing m-section of the same kind takes
    it over (see :meth:`SubscriberOfferState.reusable_mid`). New tracks follow in the given
    order, then the data channel (``m=application``) the first time ``data_channel`` is asked
    for; once offered it stays. ``version`` must grow from offer to offer within a
    ``session_id``. Raises ``ValueError`` (an :class:`SdpError`) on inconsistent input."""
    policy = policy or CodecPolicy()
    _check_local(ice_ufrag, ice_pwd, fingerprints, candidates)
    if not 0 <= session_id < 2**63 or not 0 <= version < 2**63:
        raise SdpError("session_id and version must be in 0..2**63-1")
    if previous is not None:
        if session_id != previous.session_id:
            raise SdpError(
                f"session_id {session_id} differs from the previous offer's "
                f"{previous.session_id}"
            )
        if version <= previous.version:
            raise SdpError(
                f"version {version} does not increase (the previous offer had "
                f"{previous.version})"
            )
    by_mid: dict[str, SubscriberTrack] = {}
    for track in tracks:
        if track.mid in by_mid:
            raise SdpError(f"two tracks with mid {track.mid!r}")
        by_mid[track.mid] = track
        _check_track_codecs(track, policy)
    plan: list[OfferedMedia] = []
    for old in previous.media if previous else ():
        taken = by_mid.pop(old.mid) if old.mid in by_mid else None
        if taken is not None and taken.kind != old.kind:
            raise SdpError(
                f"track {taken.track_id!r}: mid {old.mid!r} is the m-section of "
                f"{old.kind}, not {taken.kind}"
            )
        if old.kind == "application":
            plan.append(old)
        elif taken is not None:
            plan.append(OfferedMedia(old.mid, old.kind, taken, taken.codecs,
                                     _subscriber_extensions(taken.kind, policy)))
        else:
            plan.append(OfferedMedia(old.mid, old.kind, None, old.codecs, old.extension_ids))
    for track in by_mid.values():
        plan.append(OfferedMedia(track.mid, track.kind, track, track.codecs,
                                 _subscriber_extensions(track.kind, policy)))
    if data_channel and not any(m.kind == "application" for m in plan):
        used = {m.mid for m in plan}
        mid = next(str(n) for n in range(len(used) + 1) if str(n) not in used)
        plan.append(OfferedMedia(mid, "application", None))
    local = _LocalTransport(ice_ufrag, ice_pwd, fingerprints, candidates, "actpass")
    sections = []
    for item in plan:
        if item.kind == "application":
            sections.append(_data_section(item.mid, sctp_port, max_message_size, local))
        else:
            sections.append(_subscriber_section(item, local))
    attributes = [Attribute("ice-lite")]
    attributes.append(Attribute("group", " ".join(["BUNDLE", *(m.mid for m in plan)])))
    attributes.append(Attribute("msid-semantic", " WMS *"))
    description = SessionDescription(
        Origin(session_id, version), "-", ("t=0 0",), tuple(attributes), tuple(sections)
    )
    text = str(description)
    return text, SubscriberOfferState(session_id, version, tuple(plan), text)


def _check_track_codecs(track: SubscriberTrack, policy: CodecPolicy) -> None:
    allowed = policy.audio_codecs if track.kind == "audio" else policy.video_codecs
    for codec in track.codecs:
        if _CANONICAL_CODECS.get(codec.name.lower()) not in allowed:
            raise SdpError(
                f"track {track.track_id!r}: codec {codec.name!r} is not allowed by the policy "
                f"({', '.join(allowed) or 'no ' + track.kind})"
            )


def _subscriber_extensions(kind: str, policy: CodecPolicy) -> dict[str, int]:
    """No rid extensions downstream (one layer per subscriber), audio level only for audio."""
    skip = {EXT_RID, EXT_REPAIRED_RID} | ({EXT_AUDIO_LEVEL} if kind == "video" else set())
    return {uri: SUPPORTED_EXTENSIONS[uri] for uri in policy.header_extensions if uri not in skip}


def _subscriber_section(item: OfferedMedia, local: _LocalTransport) -> MediaSection:
    track = item.track
    attributes = local.attributes(item.mid)
    attributes += [Attribute("extmap", f"{i} {uri}") for uri, i in item.extension_ids.items()]
    attributes.append(Attribute("sendonly" if track else "inactive"))
    if track:
        attributes.append(Attribute("msid", f"{track.stream_id} {track.track_id}"))
    attributes += [Attribute("rtcp-mux"), Attribute("rtcp-rsize")]
    attributes += _codec_attributes(item.codecs)
    if track:
        cname = track.cname or track.stream_id
        ssrcs = [track.ssrc]
        if track.rtx_ssrc is not None:
            ssrcs.append(track.rtx_ssrc)
            attributes.append(Attribute("ssrc-group", f"FID {track.ssrc} {track.rtx_ssrc}"))
        for ssrc in ssrcs:
            attributes.append(Attribute("ssrc", f"{ssrc} cname:{cname}"))
            attributes.append(
                Attribute("ssrc", f"{ssrc} msid:{track.stream_id} {track.track_id}")
            )
    return MediaSection(item.kind, local.port, RTP_PROTOCOL, _payload_types(item.codecs),
                        (str(local.connection),), tuple(attributes))


def apply_subscriber_answer(state: SubscriberOfferState, answer_text: str) -> SubscriberNegotiation:
    """Read a subscriber's answer to the offer ``state`` describes: per mid, the payload types
    and header extension ids the client accepted. Raises :class:`SdpError` if the answer is
    malformed or does not match the offer (other m-sections, codecs or extension ids that
    were not offered, a DTLS role other than active, a sending direction)."""
    answer = SessionDescription.parse(answer_text)
    if len(answer.media) != len(state.media):
        raise SdpError(
            f"the answer has {len(answer.media)} m-sections, the offer had {len(state.media)}"
        )
    remote = _remote_transport(answer, "answer")
    if remote.setup != "active":
        raise SdpError(
            f"a=setup:{remote.setup} in the answer: the SFU offered actpass and is always the "
            "DTLS server, so the answer must be active",
            remote.setup_line,
        )
    if answer.bundle is None:
        raise SdpError("the answer has no a=group:BUNDLE")
    media: dict[str, SubscribedMedia] = {}
    data_mid: str | None = None
    data_section: MediaSection | None = None
    for offered, answered in zip(state.media, answer.media, strict=True):
        if answered.mid != offered.mid or answered.kind != offered.kind:
            raise SdpError(
                f"m={answered.kind} with a=mid:{answered.mid} answers the offer's "
                f"m={offered.kind} with a=mid:{offered.mid}",
                answered.line,
            )
        if answered.port == 0:
            direction = "rejected"
        else:
            direction = answered.effective_direction
            expected = ("recvonly", "inactive") if offered.track else ("inactive",)
            if offered.kind != "application" and direction not in expected:
                raise SdpError(
                    f"a={direction} answers a "
                    f"{'sendonly' if offered.track else 'inactive'} m-section (mid "
                    f"{offered.mid})",
                    _attribute_line(answered, direction) or answered.line,
                )
        if offered.kind == "application":
            if direction != "rejected":
                data_mid, data_section = offered.mid, answered
            continue
        codecs: tuple[NegotiatedCodec, ...] = ()
        extension_ids: dict[str, int] = {}
        if direction != "rejected":
            codecs = _accepted_codecs(offered, answered)
            for extmap in answered.extmaps:
                if offered.extension_ids.get(extmap.uri) != extmap.id:
                    raise SdpError(
                        f"a=extmap:{extmap.id} {extmap.uri} was not offered with that id",
                        _extmap_line(answered, extmap.id),
                    )
                extension_ids[extmap.uri] = extmap.id
        media[offered.mid] = SubscribedMedia(
            offered.mid, offered.kind, offered.track, direction, codecs, extension_ids
        )
    return SubscriberNegotiation(
        version=state.version,
        media=media,
        data_mid=data_mid,
        sctp_port=data_section.sctp_port if data_section else None,
        max_message_size=data_section.max_message_size if data_section else None,
        remote_ice_ufrag=remote.ice_ufrag,
        remote_ice_pwd=remote.ice_pwd,
        remote_fingerprints=remote.fingerprints,
        remote_setup=remote.setup,
    )


def _accepted_codecs(offered: OfferedMedia, answered: MediaSection) -> tuple[NegotiatedCodec, ...]:
    by_pt = {c.payload_type: c for c in offered.codecs}
    offered_rtx = {c.rtx_payload_type: c for c in offered.codecs if c.rtx_payload_type}
    accepted: list[NegotiatedCodec] = []
    for fmt in answered.fmts:
        pt = int(fmt)
        if pt in offered_rtx:
            continue
        if pt not in by_pt:
            raise SdpError(
                f"payload type {pt} was not offered in the m-section with a=mid:{offered.mid}",
                answered.line,
            )
        mine = by_pt[pt]
        theirs = answered.codec(pt)
        if theirs is not None and (
            theirs.name.lower() != mine.name.lower() or theirs.clock_rate != mine.clock_rate
        ):
            raise SdpError(
                f"payload type {pt} is {theirs.name}/{theirs.clock_rate} in the answer, "
                f"{mine.name}/{mine.clock_rate} in the offer",
                _attribute_line(answered, "rtpmap", f"{pt} ") or answered.line,
            )
        rtx = mine.rtx_payload_type if str(mine.rtx_payload_type) in answered.fmts else None
        accepted.append(
            NegotiatedCodec(
                payload_type=pt,
                name=mine.name,
                clock_rate=mine.clock_rate,
                channels=mine.channels,
                fmtp=(theirs.fmtp or "") if theirs else mine.fmtp,
                rtx_payload_type=rtx,
                rtcp_feedback=theirs.rtcp_feedback if theirs else (),
            )
        )
    return tuple(accepted)


# -- shared pieces ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RemoteTransport:
    ice_ufrag: str
    ice_pwd: str
    fingerprints: tuple[Fingerprint, ...]
    setup: str
    setup_line: int


def _remote_transport(description: SessionDescription, what: str) -> _RemoteTransport:
    """The peer's ICE and DTLS attributes: session level, else the first bundled section."""
    bundled = [m for m in description.media if m.port != 0 or m.bundle_only]
    ufrag = description.ice_ufrag or next((m.ice_ufrag for m in bundled if m.ice_ufrag), None)
    pwd = description.ice_pwd or next((m.ice_pwd for m in bundled if m.ice_pwd), None)
    fingerprints = description.fingerprints or next(
        (m.fingerprints for m in bundled if m.fingerprints), ()
    )
    setup = description.setup or next((m.setup for m in bundled if m.setup), None)
    if not ufrag or not pwd:
        raise SdpError(f"the {what} has no a=ice-ufrag and a=ice-pwd")
    if not fingerprints:
        raise SdpError(f"the {what} has no a=fingerprint")
    if setup is None:
        raise SdpError(f"the {what} has no a=setup")
    line = _attribute_line_in(description.attributes, "setup") or next(
        (_attribute_line(m, "setup") for m in bundled if m.setup), 0
    )
    return _RemoteTransport(ufrag, pwd, tuple(fingerprints), setup, line)


class _LocalTransport:
    """The SFU's ICE and DTLS attributes, repeated in every bundled m-section."""

    def __init__(
        self,
        ice_ufrag: str,
        ice_pwd: str,
        fingerprints: Sequence[tuple[str, str]],
        candidates: Sequence[str],
        setup: str,
    ) -> None:
        fields = candidates[0].split(" ")
        self.connection = Connection.for_address(fields[4])
        self.port = int(fields[5])
        self._attributes = [
            *(Attribute("candidate", c) for c in candidates),
            Attribute("end-of-candidates"),
            Attribute("ice-ufrag", ice_ufrag),
            Attribute("ice-pwd", ice_pwd),
            *(Attribute("fingerprint", f"{alg} {value}") for alg, value in fingerprints),
            Attribute("setup", setup),
        ]

    def attributes(self, mid: str) -> list[Attribute]:
        return [*self._attributes, Attribute("mid", mid)]


def _check_local(
    ice_ufrag: str,
    ice_pwd: str,
    fingerprints: Sequence[tuple[str, str]],
    candidates: Sequence[str],
) -> None:
    for label, value, low in (("ice_ufrag", ice_ufrag, 4), ("ice_pwd", ice_pwd, 22)):
        if not _ICE_CHARS.fullmatch(value) or not low <= len(value) <= 256:
            raise SdpError(
                f"bad {label} {value!r}: expected {low} to 256 ice-chars (A-Z a-z 0-9 + /)"
            )
    if not fingerprints:
        raise SdpError("no fingerprint: DTLS needs the certificate's fingerprint")
    for algorithm, value in fingerprints:
        Fingerprint.parse(f"{algorithm} {value}")
    if not candidates:
        raise SdpError("no candidate: an ICE-lite server is reachable only at its candidates")
    for candidate in candidates:
        reason = _candidate_problem(candidate)
        if reason:
            raise SdpError(f"bad candidate {candidate!r}: {reason}")


def _data_section(
    mid: str, sctp_port: int, max_message_size: int, local: _LocalTransport,
    proto: str = SCTP_PROTOCOL,
) -> MediaSection:
    attributes = local.attributes(mid)
    attributes += [
        Attribute("sctp-port", str(sctp_port)),
        Attribute("max-message-size", str(max_message_size)),
    ]
    return MediaSection("application", local.port, proto, (DATA_CHANNEL_FORMAT,),
                        (str(local.connection),), tuple(attributes))


def _payload_types(codecs: Iterable[NegotiatedCodec]) -> tuple[str, ...]:
    """The m-line formats: each codec followed by its RTX, as Chromium lists them."""
    pts = []
    for codec in codecs:
        pts.append(str(codec.payload_type))
        if codec.rtx_payload_type is not None:
            pts.append(str(codec.rtx_payload_type))
    return tuple(pts)


def _codec_attributes(codecs: Iterable[NegotiatedCodec]) -> list[Attribute]:
    """rtpmap, rtcp-fb and fmtp per codec, then its RTX: Chromium's order."""
    attributes = []
    for codec in codecs:
        channels = f"/{codec.channels}" if codec.channels else ""
        pt = codec.payload_type
        attributes.append(Attribute("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}{channels}"))
        attributes += [Attribute("rtcp-fb", f"{pt} {fb}") for fb in codec.rtcp_feedback]
        if codec.fmtp:
            attributes.append(Attribute("fmtp", f"{pt} {codec.fmtp}"))
        if codec.rtx_payload_type is not None:
            rtx = codec.rtx_payload_type
            attributes.append(Attribute("rtpmap", f"{rtx} rtx/{codec.clock_rate}"))
            attributes.append(Attribute("fmtp", f"{rtx} apt={pt}"))
    return attributes


def _check_m_line(kind: str, port: int, proto: str, fmts: tuple[str, ...], line: int) -> None:
    if not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(proto.replace("/", "-")):
        raise SdpError(f"bad m= line: media {kind!r}, proto {proto!r}", line)
    if not 0 <= port <= 65535:
        raise SdpError(f"bad port {port} in the m= line", line)
    if not fmts or not all(fmts):
        raise SdpError("the m= line has no format", line)
    if "RTP/" in proto:
        for fmt in fmts:
            if _int(fmt, 0, 127) is None:
                raise SdpError(f"bad payload type {fmt!r} in the m= line: expected 0..127", line)
        if len(set(fmts)) != len(fmts):
            raise SdpError("the m= line lists a payload type twice", line)


def _parse_m_line(value: str, line: int) -> tuple[str, int, str, tuple[str, ...]]:
    parts = value.split(" ")
    if len(parts) < 4 or "" in parts:
        raise SdpError(
            f"bad m= line {'m=' + value!r}: expected 'm=<media> <port> <proto> <fmt> ...'", line
        )
    port = _int(parts[1], 0, 65535)
    if port is None:
        raise SdpError(f"bad port {parts[1]!r} in the m= line: expected 0..65535", line)
    return parts[0], port, parts[2], tuple(parts[3:])


def _int(text: str, low: int, high: int) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if low <= value <= high else None


def _once(attr: Attribute, seen: dict[str, int]) -> None:
    if attr.name in seen:
        raise SdpError(f"second a={attr.name} (the first is on line {seen[attr.name]})", attr.line)
    seen[attr.name] = attr.line


def _ice_chars(attr: Attribute, low: int) -> str:
    value = attr.value or ""
    if not _ICE_CHARS.fullmatch(value) or not low <= len(value) <= 256:
        raise SdpError(
            f"bad a={attr.name} value {value!r}: expected {low} to 256 ice-chars", attr.line
        )
    return value


def _payload_type(attr: Attribute, text: str, fmts: tuple[str, ...]) -> int:
    pt = _int(text, 0, 127)
    if pt is None:
        raise SdpError(f"bad payload type {text!r} in a={attr.name}", attr.line)
    if text not in fmts:
        raise SdpError(f"a={attr.name} for payload type {pt}, which the m= line lacks", attr.line)
    return pt


def _rtpmap(attr: Attribute) -> tuple[str, int, int | None]:
    value = attr.value or ""
    _, _, encoding = value.partition(" ")
    parts = encoding.split("/")
    clock_rate = _int(parts[1], 1, 2**32) if len(parts) in (2, 3) else None
    channels = _int(parts[2], 1, 255) if len(parts) == 3 else None
    if not parts[0] or clock_rate is None or (len(parts) == 3 and channels is None):
        raise SdpError(
            f"bad a=rtpmap value {value!r}: expected '<pt> <name>/<clock rate>[/<channels>]'",
            attr.line,
        )
    return parts[0], clock_rate, channels


def _extmap(attr: Attribute) -> Extmap:
    value = attr.value or ""
    head, _, rest = value.partition(" ")
    id_text, slash, direction = head.partition("/")
    uri, _, extra = rest.partition(" ")
    ext_id = _int(id_text, 1, 255)
    if ext_id is None or not uri:
        raise SdpError(
            f"bad a=extmap value {value!r}: expected '<id 1..255>[/<direction>] <uri>'",
            attr.line,
        )
    if slash and direction not in DIRECTIONS:
        raise SdpError(f"bad a=extmap direction {direction!r}", attr.line)
    return Extmap(ext_id, uri, direction or None, extra or None)


def _ssrc_attribute(attr: Attribute) -> SsrcAttribute:
    value = attr.value or ""
    ssrc_text, _, rest = value.partition(" ")
    name, colon, attr_value = rest.partition(":")
    ssrc = _int(ssrc_text, 0, 2**32 - 1)
    if ssrc is None or not name:
        raise SdpError(
            f"bad a=ssrc value {value!r}: expected '<ssrc> <attribute>[:<value>]'", attr.line
        )
    return SsrcAttribute(ssrc, name, attr_value if colon else None)


def _ssrc_group(attr: Attribute) -> SsrcGroup:
    value = attr.value or ""
    semantics, *rest = value.split(" ")
    ssrcs = [_int(s, 0, 2**32 - 1) for s in rest]
    if not _TOKEN.fullmatch(semantics) or not ssrcs or None in ssrcs:
        raise SdpError(
            f"bad a=ssrc-group value {value!r}: expected '<semantics> <ssrc> ...'", attr.line
        )
    if semantics == "FID" and len(ssrcs) != 2:
        raise SdpError(f"a=ssrc-group:FID needs 2 ssrcs, got {len(ssrcs)}", attr.line)
    return SsrcGroup(semantics, tuple(s for s in ssrcs if s is not None))


def _msid(attr: Attribute) -> Msid:
    value = attr.value or ""
    parts = value.split(" ")
    if len(parts) > 2 or not all(parts):
        raise SdpError(
            f"bad a=msid value {value!r}: expected '<stream id>[ <track id>]'", attr.line
        )
    return Msid(parts[0], parts[1] if len(parts) == 2 else None)


def _rid(attr: Attribute) -> Rid:
    value = attr.value or ""
    rid_id, _, rest = value.partition(" ")
    direction, _, params = rest.partition(" ")
    if not _RID_ID.fullmatch(rid_id) or direction not in ("send", "recv"):
        raise SdpError(
            f"bad a=rid value {value!r}: expected '<rid> send|recv[ <restrictions>]'", attr.line
        )
    return Rid(rid_id, direction, params or None)


def _candidate_problem(value: str) -> str | None:
    fields = value.split(" ")
    if len(fields) < 8 or fields[6] != "typ" or "" in fields[:8]:
        return f"expected {_CANDIDATE_SHAPE}"
    if not _ICE_CHARS.fullmatch(fields[0]) or len(fields[0]) > 32:
        return f"bad foundation {fields[0]!r}"
    if _int(fields[1], 1, 256) is None:
        return f"bad component {fields[1]!r}"
    if _int(fields[3], 0, 2**32 - 1) is None:
        return f"bad priority {fields[3]!r}"
    if _int(fields[5], 0, 65535) is None:
        return f"bad port {fields[5]!r}"
    return None


def _attribute_line_in(attributes: Iterable[Attribute], name: str, prefix: str = "") -> int:
    return next(
        (a.line for a in attributes if a.name == name and (a.value or "").startswith(prefix)), 0
    )


def _attribute_line(section: MediaSection, name: str, prefix: str = "") -> int:
    return _attribute_line_in(section.attributes, name, prefix)


def _extmap_line(section: MediaSection, ext_id: int) -> int:
    return next(
        (
            a.line for a in section.attributes
            if a.name == "extmap" and (a.value or "").partition(" ")[0].split("/")[0]
            == str(ext_id)
        ),
        section.line,
    )


# -- the transport-only interface ---------------------------------------------------------
# parse_offer/build_answer predate the codec negotiation above; the ICE/DTLS integration
# tests use them. New code calls answer_publisher_offer.

_HOST_PRIORITY: Final = 2130706431  # type preference 126, local preference 65535, component 1


class _Credentials(Protocol):
    @property
    def ufrag(self) -> str: ...

    @property
    def pwd(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Offer:
    """A peer's offer as the transports see it (ICE credentials, DTLS fingerprints)."""

    text: str
    description: SessionDescription
    ice_ufrag: str
    ice_pwd: str
    #: ``"sha-256 AB:CD:..."`` strings.
    fingerprints: list[str]
    setup: str

    @property
    def media(self) -> tuple[MediaSection, ...]:
        return self.description.media

    @property
    def bundle(self) -> list[str]:
        return list(self.description.bundle or ())


def parse_offer(sdp: str) -> Offer:
    """Parse an offer; raises :class:`SdpError` (a ``WebRtcError``) if it is malformed or
    lacks ICE credentials, fingerprint or setup."""
    description = SessionDescription.parse(sdp)
    remote = _remote_transport(description, "offer")
    return Offer(
        sdp, description, remote.ice_ufrag, remote.ice_pwd,
        [str(fp) for fp in remote.fingerprints], remote.setup,
    )


def build_answer(
    offer: Offer,
    *,
    credentials: _Credentials,
    fingerprints: Iterable[str],
    candidate: tuple[str, int],
    session_id: int = 1,
    session_version: int = 1,
    audio_codec: str = "opus",
    video_codec: str = "VP8",
) -> str:
    """:func:`answer_publisher_offer` with one host candidate and one codec per kind.
    ``fingerprints`` are ``"sha-256 AB:CD:..."`` strings. Raises :class:`SdpError` if no
    m-section can be accepted."""
    pairs = []
    for value in fingerprints:
        algorithm, _, digest = value.partition(" ")
        pairs.append((algorithm, digest))
    host, port = candidate[0], candidate[1]
    answer, negotiation = answer_publisher_offer(
        offer.text,
        ice_ufrag=credentials.ufrag,
        ice_pwd=credentials.pwd,
        fingerprints=pairs,
        candidates=[f"1 1 udp {_HOST_PRIORITY} {host} {port} typ host"],
        policy=CodecPolicy(audio_codecs=(audio_codec,), video_codecs=(video_codec,)),
        session_id=session_id,
        version=session_version,
    )
    if not negotiation.media and not negotiation.data_channel:
        raise SdpError("no m-section of the offer can be accepted")
    return answer
