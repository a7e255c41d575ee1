"""SDP the bench clients write and read, built from :mod:`sfu.webrtc.sdp`'s wire types (so
what they send passes the same parser the server uses).

- :func:`publisher_offer`: BUNDLE, rtcp-mux, one ``m=audio`` (Opus 111) and one ``m=video``
  (VP8 96 + RTX 97), extmaps mid / abs-send-time / transport-cc, ``a=ssrc`` lines with
  cname and msid, ``a=setup:actpass``, our ICE credentials, fingerprint and host candidate.
  With ``video=False`` only the audio section. With ``rids`` the video section offers RID
  simulcast as Chromium does: ``a=rid:<rid> send`` per layer, ``a=simulcast:send q;h;f``,
  the rtp-stream-id and repaired-rtp-stream-id extmaps, and no ``a=ssrc`` /
  ``a=ssrc-group`` lines.
- :func:`subscriber_answer`: the answer to a server offer: same mids, ``recvonly`` for what
  the server sends, the offered codecs, payload types and extension ids, ``a=setup:active``,
  our ICE credentials and fingerprint. The data channel is refused (port 0): the bench
  measures media forwarding and runs no SCTP.
- :func:`remote_transport` / :func:`subscriber_streams`: what the clients need from the
  server's SDP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sfu.webrtc.sdp import (
    EXT_ABS_SEND_TIME,
    EXT_REPAIRED_RID,
    EXT_RID,
    EXT_TRANSPORT_CC,
    RTP_PROTOCOL,
    Attribute,
    Extmap,
    MediaSection,
    Origin,
    SessionDescription,
    Simulcast,
    SimulcastStream,
)

from .rtp import PUBLISHER_EXTENSIONS, SIMULCAST_EXTENSIONS, StreamInfo
from .transport import CLIENT_PRIORITY, BenchError

__all__ = ["PublisherSsrcs", "RemoteTransport", "publisher_offer", "remote_transport", "subscriber_answer",
           "subscriber_streams"]

_NULL_CONNECTION = "c=IN IP4 0.0.0.0"


@dataclass(frozen=True, slots=True)
class PublisherSsrcs:
    """The SSRCs the offer announces (with RID simulcast only ``audio``: video SSRCs are
    announced by the rid header extensions)."""

    audio: int
    video: int
    rtx: int


def _transport_attributes(ufrag: str, pwd: str, fingerprints: Sequence[str], setup: str,
                          port: int | None) -> list[Attribute]:
    attributes = []
    if port is not None:
        attributes += [Attribute("candidate", f"1 1 udp {CLIENT_PRIORITY} 127.0.0.1 {port} typ host"),
                       Attribute("end-of-candidates")]
    attributes += [Attribute("ice-ufrag", ufrag), Attribute("ice-pwd", pwd)]
    attributes += [Attribute("fingerprint", fp) for fp in fingerprints]
    attributes.append(Attribute("setup", setup))
    return attributes


def publisher_offer(
    *,
    ufrag: str,
    pwd: str,
    fingerprints: Sequence[str],
    port: int,
    ssrcs: PublisherSsrcs,
    session_id: int,
    stream_id: str,
    cname: str,
    ext_ids: Mapping[str, int] | None = None,
    rids: Sequence[str] = (),
    video: bool = True,
) -> str:
    """The publisher's offer: mid 0 audio, mid 1 video (see the module docstring); without
    ``video`` the audio section alone.

    ``ext_ids`` default to :data:`~bench.rtp.PUBLISHER_EXTENSIONS`, with ``rids`` to
    :data:`~bench.rtp.SIMULCAST_EXTENSIONS`; the rid extensions are offered on the video
    section only. ``rids``: the simulcast layers, lowest first (e.g. ``("q", "h", "f")``).
    """
    if ext_ids is None:
        ext_ids = SIMULCAST_EXTENSIONS if rids else PUBLISHER_EXTENSIONS
    if rids and not {EXT_RID, EXT_REPAIRED_RID} <= set(ext_ids):
        raise ValueError("RID simulcast needs ids for rtp-stream-id and repaired-rtp-stream-id")
    transport = _transport_attributes(ufrag, pwd, fingerprints, "actpass", port)
    ordered = sorted(ext_ids.items(), key=lambda item: item[1])
    video_extmaps = [Attribute("extmap", str(Extmap(i, uri))) for uri, i in ordered]
    audio_extmaps = [Attribute("extmap", str(Extmap(i, uri))) for uri, i in ordered
                     if uri not in (EXT_RID, EXT_REPAIRED_RID)]
    connection = "c=IN IP4 127.0.0.1"

    def ssrc_lines(ssrc: int, track: str) -> list[Attribute]:
        return [Attribute("ssrc", f"{ssrc} cname:{cname}"),
                Attribute("ssrc", f"{ssrc} msid:{stream_id} {track}")]

    audio = MediaSection("audio", port, RTP_PROTOCOL, ("111",), (connection,), (
        *transport, Attribute("mid", "0"), *audio_extmaps, Attribute("sendonly"),
        Attribute("msid", f"{stream_id} {stream_id}-audio"), Attribute("rtcp-mux"),
        Attribute("rtcp-rsize"),
        Attribute("rtpmap", "111 opus/48000/2"), Attribute("rtcp-fb", "111 transport-cc"),
        Attribute("fmtp", "111 minptime=10;useinbandfec=1"),
        *ssrc_lines(ssrcs.audio, f"{stream_id}-audio"),
    ))
    if rids:
        streams = tuple((SimulcastStream(rid),) for rid in rids)
        video_ssrcs = [*(Attribute("rid", f"{rid} send") for rid in rids),
                       Attribute("simulcast", str(Simulcast(send=streams)))]
    else:
        video_ssrcs = [Attribute("ssrc-group", f"FID {ssrcs.video} {ssrcs.rtx}"),
                       *ssrc_lines(ssrcs.video, f"{stream_id}-video"),
                       *ssrc_lines(ssrcs.rtx, f"{stream_id}-video")]
    video_fb = ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
    video_section = MediaSection("video", port, RTP_PROTOCOL, ("96", "97"), (connection,), (
        *transport, Attribute("mid", "1"), *video_extmaps, Attribute("sendonly"),
        Attribute("msid", f"{stream_id} {stream_id}-video"), Attribute("rtcp-mux"),
        Attribute("rtcp-rsize"),
        Attribute("rtpmap", "96 VP8/90000"), *(Attribute("rtcp-fb", f"96 {fb}") for fb in video_fb),
        Attribute("rtpmap", "97 rtx/90000"), Attribute("fmtp", "97 apt=96"),
        *video_ssrcs,
    ))
    sections = (audio, video_section) if video else (audio,)
    description = SessionDescription(
        Origin(session_id, 2), "-", ("t=0 0",),
        (Attribute("group", "BUNDLE 0 1" if video else "BUNDLE 0"),
         Attribute("msid-semantic", " WMS *")),
        sections,
    )
    return str(description)


@dataclass(frozen=True, slots=True)
class RemoteTransport:
    """The server's side of a transport, from its offer or answer."""

    address: tuple[str, int]
    ufrag: str
    pwd: str
    fingerprints: tuple[str, ...]


def remote_transport(description: SessionDescription) -> RemoteTransport:
    """The server's host candidate, ICE credentials and fingerprints; raises
    :class:`BenchError` if any is missing."""
    bundled = [m for m in description.media if m.port != 0]
    ufrag = description.ice_ufrag or next((m.ice_ufrag for m in bundled if m.ice_ufrag), None)
    pwd = description.ice_pwd or next((m.ice_pwd for m in bundled if m.ice_pwd), None)
    fps = description.fingerprints or next((m.fingerprints for m in bundled if m.fingerprints), ())
    candidate = next((c for m in bundled for c in m.candidates), None)
    if not ufrag or not pwd or not fps or candidate is None:
        raise BenchError("the server's SDP lacks ICE credentials, a fingerprint or a candidate")
    fields = candidate.split(" ")
    return RemoteTransport((fields[4], int(fields[5])), ufrag, pwd,
                           tuple(f"{fp.algorithm} {fp.value}" for fp in fps))


def subscriber_answer(
    offer: SessionDescription,
    *,
    ufrag: str,
    pwd: str,
    fingerprints: Sequence[str],
    session_id: int,
    version: int,
) -> str:
    """Answer a server offer on the subscriber transport (see the module docstring)."""
    sections: list[MediaSection] = []
    accepted: list[str] = []
    for m in offer.media:
        mid = m.mid or ""
        if m.kind not in ("audio", "video") or m.port == 0:
            sections.append(MediaSection(m.kind, 0, m.proto, m.fmts[:1], (_NULL_CONNECTION,),
                                         (Attribute("mid", mid),)))
            continue
        receiving = m.effective_direction in ("sendonly", "sendrecv")
        attributes = [Attribute("mid", mid)]
        attributes += [Attribute("extmap", str(Extmap(e.id, e.uri))) for e in m.extmaps]
        attributes.append(Attribute("recvonly" if receiving else "inactive"))
        attributes.append(Attribute("rtcp-mux"))
        if m.rtcp_rsize:
            attributes.append(Attribute("rtcp-rsize"))
        for codec in m.codecs:
            channels = f"/{codec.channels}" if codec.channels else ""
            attributes.append(Attribute(
                "rtpmap", f"{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}"))
            attributes += [Attribute("rtcp-fb", f"{codec.payload_type} {fb}")
                           for fb in dict.fromkeys(codec.rtcp_feedback)]
            if codec.fmtp:
                attributes.append(Attribute("fmtp", f"{codec.payload_type} {codec.fmtp}"))
        sections.append(MediaSection(m.kind, 9, m.proto, m.fmts, (_NULL_CONNECTION,),
                                     tuple(attributes)))
        accepted.append(mid)
    session = [Attribute("group", " ".join(["BUNDLE", *accepted])),
               *_transport_attributes(ufrag, pwd, fingerprints, "active", None)]
    description = SessionDescription(Origin(session_id, version), "-", ("t=0 0",),
                                     tuple(session), tuple(sections))
    return str(description)


def subscriber_streams(offer: SessionDescription) -> tuple[dict[int, StreamInfo], int, int]:
    """The SSRCs the server will send (media SSRC → kind, clock rate, NACK/PLI allowed,
    RTX SSRC), and the transport-cc and abs-send-time extension ids (0 if not offered)."""
    infos: dict[int, StreamInfo] = {}
    tcc_id = abs_id = 0
    for m in offer.media:
        if m.kind not in ("audio", "video") or m.port == 0 or m.effective_direction != "sendonly":
            continue
        for e in m.extmaps:
            if e.uri == EXT_TRANSPORT_CC:
                tcc_id = e.id
            elif e.uri == EXT_ABS_SEND_TIME:
                abs_id = e.id
        media_codecs = [c for c in m.codecs if c.name.lower() != "rtx"]
        if not media_codecs:
            continue
        codec = media_codecs[0]
        fid = {g.ssrcs[0]: g.ssrcs[1] for g in m.ssrc_groups if g.semantics == "FID"}
        repairs = set(fid.values())
        feedback = set(codec.rtcp_feedback)
        for ssrc in dict.fromkeys(a.ssrc for a in m.ssrcs if a.ssrc not in repairs):
            infos[ssrc] = StreamInfo(kind=m.kind, clock_rate=codec.clock_rate,
                                     nack="nack" in feedback, rtx_ssrc=fid.get(ssrc),
                                     pli="nack pli" in feedback)
    return infos, tcc_id, abs_id
