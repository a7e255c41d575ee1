"""SDP parsing and offer/answer, on descriptions captured from Chromium 156 and aiortc 1.16.

The fixtures come from ``tests/unit/sdp_fixtures/capture.py`` (see its docstring). The tests
marked ``browser`` hand our answers and offers to a live Chromium and check it accepts them.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sfu.webrtc import sdp
from sfu.webrtc.errors import WebRtcError

FIXTURES = Path(__file__).resolve().parent / "sdp_fixtures"
UFRAG, PWD = "SFU1", "sfupasswordsfupassword12"
FINGERPRINT = ("sha-256", ":".join(f"{i:02X}" for i in range(32)))
CANDIDATE = "1 1 udp 2130706431 127.0.0.1 7882 typ host"
REFUSED_CODECS = {"red", "ulpfec", "flexfec-03", "vp9", "av1", "g722", "pcmu", "pcma", "cn",
                  "telephone-event"}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()  # bytes: keep the CRLFs


def load_capture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sdp_capture", FIXTURES / "capture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer(
    offer_text: str, policy: sdp.CodecPolicy | None = None
) -> tuple[str, sdp.PublisherNegotiation]:
    return sdp.answer_publisher_offer(
        offer_text, ice_ufrag=UFRAG, ice_pwd=PWD, fingerprints=[FINGERPRINT],
        candidates=[CANDIDATE], policy=policy or sdp.CodecPolicy(),
    )


def track(mid: str, kind: str, name: str, ssrc: int, stream: str = "PA_alice") -> sdp.SubscriberTrack:
    return sdp.SubscriberTrack(
        mid=mid, kind=kind, stream_id=stream, track_id=name, ssrc=ssrc,
        rtx_ssrc=ssrc + 1 if kind == "video" else None, codecs=sdp.default_codecs(kind),
    )


def offer(
    tracks: list[sdp.SubscriberTrack],
    version: int,
    previous: sdp.SubscriberOfferState | None = None,
    data_channel: bool = True,
) -> tuple[str, sdp.SubscriberOfferState]:
    return sdp.offer_subscriber(
        tracks, ice_ufrag=UFRAG, ice_pwd=PWD, fingerprints=[FINGERPRINT], candidates=[CANDIDATE],
        policy=sdp.CodecPolicy(), session_id=77, version=version, previous=previous,
        data_channel=data_channel,
    )


def lines_of(section: sdp.MediaSection) -> list[str]:
    return str(section).split("\r\n")


def found(pattern: str, text: str) -> tuple[str, ...]:
    """The groups of the first match: values of a fixture, which a re-capture changes."""
    match = re.search(pattern, text)
    assert match is not None, pattern
    return match.groups()


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sdp")))
def test_fixtures_round_trip_byte_for_byte(name: str) -> None:
    text = fixture(name)
    description = sdp.SessionDescription.parse(text)
    assert str(description) == text
    assert sdp.SessionDescription.parse(str(description)) == description


def test_lf_only_input_parses_to_the_same_description() -> None:
    text = fixture("chromium_simulcast_offer.sdp")
    assert sdp.SessionDescription.parse(text.replace("\r\n", "\n")) == (
        sdp.SessionDescription.parse(text)
    )


def test_chromium_audio_video_data_offer_views() -> None:
    text = fixture("chromium_av_datachannel_offer.sdp")
    (port,) = found(r"m=audio (\d+) ", text)
    ufrag, pwd = found(r"a=ice-ufrag:(\S+)\r\na=ice-pwd:(\S+)", text)
    stream_id, track_id = found(r"(?s)m=video.*?a=msid:(\S+) (\S+)", text)
    media_ssrc, rtx_ssrc = (int(s) for s in found(r"a=ssrc-group:FID (\d+) (\d+)", text))
    (cname,) = found(rf"a=ssrc:{media_ssrc} cname:(\S+)", text)
    d = sdp.SessionDescription.parse(text)
    assert d.bundle == ("0", "1", "2")
    assert d.extmap_allow_mixed and not d.ice_lite
    audio, video, data = d.media
    assert (audio.kind, audio.mid, audio.direction, audio.port) == (
        "audio", "0", "sendonly", int(port)
    )
    assert audio.connection == sdp.Connection("127.0.0.1", "IP4")
    assert audio.codecs[0] == sdp.RtpCodec(
        111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ("transport-cc",)
    )
    assert audio.codec(63) == sdp.RtpCodec(63, "red", 48000, 2, "111/111")
    assert audio.codec(0) == sdp.RtpCodec(0, "PCMU", 8000)
    assert audio.extmaps[0] == sdp.Extmap(1, sdp.EXT_AUDIO_LEVEL)
    assert audio.rtcp_mux and audio.rtcp_rsize
    assert (audio.ice_ufrag, audio.ice_pwd, audio.ice_options) == (ufrag, pwd, ("trickle",))
    assert audio.setup == "actpass" and audio.fingerprints[0].algorithm == "sha-256"
    assert len(audio.candidates) == 8 and not audio.end_of_candidates
    assert audio.candidates[0].split(" ")[4:8] == ["127.0.0.1", port, "typ", "host"]
    assert sdp.Attribute("rtcp-xr", "rcvr-rtt=all") in audio.attributes  # unknown, kept
    assert video.msids == (sdp.Msid(stream_id, track_id),)
    assert video.ssrc_groups == (sdp.SsrcGroup("FID", (media_ssrc, rtx_ssrc)),)
    assert video.ssrcs[0] == sdp.SsrcAttribute(media_ssrc, "cname", cname)
    vp8 = video.codec(96)
    assert vp8 is not None and vp8.rtcp_feedback == (
        "goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"
    )
    rtx = video.rtx_for(96)
    assert rtx is not None and rtx.payload_type == 97
    assert {e.id: e.uri for e in video.extmaps}[14] == "urn:ietf:params:rtp-hdrext:toffset"
    assert (data.kind, data.proto, data.fmts) == (
        "application", "UDP/DTLS/SCTP", ("webrtc-datachannel",)
    )
    assert (data.sctp_port, data.max_message_size, data.codecs) == (5000, 262144, ())


def test_chromium_simulcast_offer_views() -> None:
    (video,) = sdp.SessionDescription.parse(fixture("chromium_simulcast_offer.sdp")).media
    assert video.rids == (sdp.Rid("q", "send"), sdp.Rid("h", "send"), sdp.Rid("f", "send"))
    assert video.simulcast == sdp.Simulcast(
        send=((sdp.SimulcastStream("q"),), (sdp.SimulcastStream("h"),),
              (sdp.SimulcastStream("f"),))
    )
    assert video.ssrcs == () and video.ssrc_groups == ()  # Chromium: no a=ssrc with rids
    assert {e.uri: e.id for e in video.extmaps}[sdp.EXT_RID] == 10


def test_aiortc_offer_views() -> None:
    text = fixture("aiortc_audio_offer.sdp")
    (track_id,) = found(r"a=msid:\S+ (\S+)", text)
    d = sdp.SessionDescription.parse(text)
    (audio,) = d.media
    assert audio.direction == "sendrecv" and audio.end_of_candidates
    assert [f.algorithm for f in audio.fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert [c.name for c in audio.codecs] == ["opus", "G722", "PCMU", "PCMA"]
    assert audio.msids[0].track_id == track_id


@pytest.mark.parametrize(
    ("value", "streams"),
    [
        ("send q;h;f", {"send": ("q", "h", "f"), "recv": ()}),
        ("recv 1,2;~3 send a", {"send": ("a",), "recv": ("1", "2", "3")}),
        ("send ~f", {"send": ("f",), "recv": ()}),
    ],
)
def test_simulcast_values_round_trip(value: str, streams: dict[str, tuple[str, ...]]) -> None:
    simulcast = sdp.Simulcast.parse(value)
    assert {d: simulcast.rids(d) for d in ("send", "recv")} == streams
    assert sdp.Simulcast.parse(str(simulcast)) == simulcast
    assert sdp.Simulcast.parse("recv 1,2;~3").recv[1] == (sdp.SimulcastStream("3", paused=True),)


MINIMAL = (
    "v=0\r\n"
    "o=- 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=mid:0\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)


def test_extmap_directions_attributes_and_two_byte_ids() -> None:
    text = MINIMAL.replace(
        "a=mid:0\r\n",
        "a=mid:0\r\na=extmap-allow-mixed\r\na=extmap:5/sendonly urn:x:y 1 2\r\n"
        "a=extmap:200 urn:x:z\r\n",
    )
    (audio,) = sdp.SessionDescription.parse(text).media
    assert audio.extmap_allow_mixed
    assert audio.extmaps == (
        sdp.Extmap(5, "urn:x:y", "sendonly", "1 2"), sdp.Extmap(200, "urn:x:z")
    )
    assert [str(e) for e in audio.extmaps] == ["5/sendonly urn:x:y 1 2", "200 urn:x:z"]


def _replace(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


def _append(extra: str) -> str:
    return MINIMAL + extra


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty session description"),
        ("x\r\n", "line 1: expected '<type>=<value>', got 'x'"),
        (_replace("v=0", "v=1"), "line 1: expected 'v=0', got 'v=1'"),
        (_replace("o=- 1 1 IN IP4 127.0.0.1\r\n", ""), "line 2: expected an o= line, got 's=-'"),
        (
            _replace("o=- 1 1", "o=- x 1"),
            "line 2: bad o= line 'o=- x 1 IN IP4 127.0.0.1': expected "
            "'o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>'",
        ),
        (_replace("t=0 0\r\n", ""), "line 5: m= line before any t= line"),
        (
            _replace("m=audio 9 ", "m=audio nine "),
            "line 6: bad port 'nine' in the m= line: expected 0..65535",
        ),
        (
            _replace("SAVPF 111", "SAVPF"),
            "line 6: bad m= line 'm=audio 9 UDP/TLS/RTP/SAVPF': "
            "expected 'm=<media> <port> <proto> <fmt> ...'",
        ),
        (
            _replace("SAVPF 111", "SAVPF 111 200"),
            "line 6: bad payload type '200' in the m= line: expected 0..127",
        ),
        (
            _replace("c=IN IP4", "c=IN IP5"),
            "line 7: bad c= line 'c=IN IP5 0.0.0.0': expected 'c=IN IP4|IP6 <address>'",
        ),
        (_append("c=IN IP4 0.0.0.0\r\n"), "line 10: c= line after the m-section's attributes"),
        (_append("t=0 0\r\n"), "line 10: t= line after the m-section's attributes"),
        (_replace("c=IN IP4 0.0.0.0", "t=0 0"), "line 7: t= is not allowed in an m-section"),
        (_replace("a=mid:0\r\n", "\r\na=mid:0\r\n"), "line 8: expected '<type>=<value>', got ''"),
        (
            _append("a=rtpmap:96 VP8/90000\r\n"),
            "line 10: a=rtpmap for payload type 96, which the m= line lacks",
        ),
        (_append("a=rtpmap:111 opus/48000\r\n"), "line 10: second a=rtpmap for payload type 111"),
        (
            _replace("opus/48000/2", "opus"),
            "line 9: bad a=rtpmap value '111 opus': "
            "expected '<pt> <name>/<clock rate>[/<channels>]'",
        ),
        (_append("a=fmtp:111\r\n"), "line 10: bad a=fmtp value '111': no parameters"),
        (
            _append("a=rtcp-fb:111\r\n"),
            "line 10: bad a=rtcp-fb value '111': expected '<payload type> <feedback>'",
        ),
        (_append("a=mid:1\r\n"), "line 10: second a=mid (the first is on line 8)"),
        (
            _append("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"),
            "line 11: second m-section with a=mid:0 (the first is on line 6)",
        ),
        (
            _replace("BUNDLE 0", "BUNDLE 0 1"),
            "line 5: a=group:BUNDLE names mid '1' that no m-section has",
        ),
        (
            _append("a=extmap:0 urn:x\r\n"),
            "line 10: bad a=extmap value '0 urn:x': expected '<id 1..255>[/<direction>] <uri>'",
        ),
        (_append("a=extmap:1/up urn:x\r\n"), "line 10: bad a=extmap direction 'up'"),
        (
            _append("a=extmap:1 urn:x\r\na=extmap:1 urn:y\r\n"),
            "line 11: second a=extmap with id 1",
        ),
        (
            _append("a=ssrc:abc cname:x\r\n"),
            "line 10: bad a=ssrc value 'abc cname:x': expected '<ssrc> <attribute>[:<value>]'",
        ),
        (_append("a=ssrc-group:FID 1\r\n"), "line 10: a=ssrc-group:FID needs 2 ssrcs, got 1"),
        (
            _append("a=ssrc-group:SIM 1 x\r\n"),
            "line 10: bad a=ssrc-group value 'SIM 1 x': expected '<semantics> <ssrc> ...'",
        ),
        (
            _append("a=msid:a b c\r\n"),
            "line 10: bad a=msid value 'a b c': expected '<stream id>[ <track id>]'",
        ),
        (
            _append("a=rid:q sideways\r\n"),
            "line 10: bad a=rid value 'q sideways': expected '<rid> send|recv[ <restrictions>]'",
        ),
        (
            _append("a=rid:q send\r\na=simulcast:send q;h\r\n"),
            "line 11: a=simulcast names rid 'h' that has no a=rid:h send",
        ),
        (
            _append("a=rid:q send\r\na=simulcast:recv q\r\n"),
            "line 11: a=simulcast names rid 'q' that has no a=rid:q recv",
        ),
        (
            _append("a=simulcast:send\r\n"),
            "line 10: bad a=simulcast value 'send': "
            "expected 'send|recv <streams>[ send|recv <streams>]'",
        ),
        (
            _append("a=simulcast:send q;!\r\n"),
            "line 10: bad a=simulcast value 'send q;!': bad rid '!'",
        ),
        (
            _append("a=fingerprint:md5 AB:CD\r\n"),
            "line 10: bad a=fingerprint value 'md5 AB:CD': expected '<hash> <AB:CD:...>' with "
            "hash one of sha-1, sha-224, sha-256, sha-384, sha-512",
        ),
        (
            _append("a=setup:server\r\n"),
            "line 10: bad a=setup value 'server': expected one of actpass, active, passive, "
            "holdconn",
        ),
        (
            _append("a=candidate:1 1 udp high 192.0.2.1 9 typ host\r\n"),
            "line 10: bad a=candidate value '1 1 udp high 192.0.2.1 9 typ host': "
            "bad priority 'high'",
        ),
        (
            _append("a=candidate:1 1 udp 1 192.0.2.1 9 host\r\n"),
            "line 10: bad a=candidate value '1 1 udp 1 192.0.2.1 9 host': expected "
            "'<foundation> <component> <transport> <priority> <address> <port> typ <type> ...'",
        ),
        (
            _append("a=ice-ufrag:ab\r\n"),
            "line 10: bad a=ice-ufrag value 'ab': expected 4 to 256 ice-chars",
        ),
        (
            _append("a=ice-ufrag:abcd\r\na=ice-ufrag:efgh\r\n"),
            "line 11: second a=ice-ufrag (the first is on line 10)",
        ),
        (
            _append("a=sendonly\r\na=recvonly\r\n"),
            "line 11: second direction attribute a=recvonly (already a=sendonly)",
        ),
        (_append("a=rtcp-mux:yes\r\n"), "line 10: a=rtcp-mux takes no value, got 'yes'"),
        (_append("a=sctp-port:abc\r\n"), "line 10: bad a=sctp-port value 'abc'"),
        (_append("a=msid\r\n"), "line 10: a=msid needs a value"),
        (_replace("a=group:BUNDLE 0", "a=ice-lite:1"), "line 5: a=ice-lite takes no value, got '1'"),
    ],
)
def test_malformed_sdp_raises_value_error_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        sdp.SessionDescription.parse(text)
    assert str(raised.value) == message
    assert isinstance(raised.value, sdp.SdpError) and isinstance(raised.value, WebRtcError)


# -- publisher answers --------------------------------------------------------------------


def test_answer_to_chromium_audio_video_data_offer() -> None:
    offer_text = fixture("chromium_av_datachannel_offer.sdp")
    ufrag, pwd = found(r"a=ice-ufrag:(\S+)\r\na=ice-pwd:(\S+)", offer_text)
    stream_id, track_id = found(r"(?s)m=video.*?a=msid:(\S+) (\S+)", offer_text)
    media_ssrc, rtx_ssrc = (int(s) for s in found(r"a=ssrc-group:FID (\d+) (\d+)", offer_text))
    text, negotiation = answer(offer_text)
    d = sdp.SessionDescription.parse(text)
    assert d.ice_lite and d.bundle == ("0", "1", "2") and d.extmap_allow_mixed
    for section in d.media:
        assert (section.port, section.connection) == (7882, sdp.Connection("127.0.0.1"))
        assert (section.ice_ufrag, section.ice_pwd, section.setup) == (UFRAG, PWD, "passive")
        assert section.fingerprints == (sdp.Fingerprint(*FINGERPRINT),)
        assert section.candidates == (CANDIDATE,) and section.end_of_candidates
    audio, video, data = d.media
    for section in (audio, video):
        assert section.direction == "recvonly" and section.rtcp_mux and section.rtcp_rsize
        names = {c.name.lower() for c in section.codecs}
        assert not names & REFUSED_CODECS
        assert {e.uri for e in section.extmaps} <= set(sdp.SUPPORTED_EXTENSIONS)
        for codec in section.codecs:
            assert set(codec.rtcp_feedback) <= set(sdp.SUPPORTED_RTCP_FEEDBACK)
    assert audio.fmts == ("111",)
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in lines_of(audio)
    assert {e.uri: e.id for e in audio.extmaps} == {
        sdp.EXT_AUDIO_LEVEL: 1, sdp.EXT_ABS_SEND_TIME: 2, sdp.EXT_TRANSPORT_CC: 3, sdp.EXT_MID: 4
    }
    # VP8 and the two packetization-mode=1 baseline H.264 profiles, each with its RTX.
    assert video.fmts == ("96", "97", "102", "103", "108", "109")
    assert [str(a) for a in video.attributes if a.name == "fmtp"] == [
        "a=fmtp:97 apt=96",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        "a=fmtp:103 apt=102",
        "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=fmtp:109 apt=108",
    ]
    assert {e.id for e in video.extmaps} == {2, 3, 4, 10, 11}  # not toffset, orientation...
    assert (data.kind, data.sctp_port, data.max_message_size) == ("application", 5000, 262144)

    assert list(negotiation.media) == ["0", "1"] and negotiation.rejected_mids == ()
    assert (negotiation.data_channel, negotiation.data_mid, negotiation.sctp_port) == (
        True, "2", 5000
    )
    assert (negotiation.remote_ice_ufrag, negotiation.remote_ice_pwd) == (ufrag, pwd)
    opus = negotiation.media["0"].codecs
    assert opus == (
        sdp.NegotiatedCodec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1", None,
                            ("transport-cc",)),
    )
    cam = negotiation.media["1"]
    assert [(c.payload_type, c.name, c.rtx_payload_type) for c in cam.codecs] == [
        (96, "VP8", 97), (102, "H264", 103), (108, "H264", 109)
    ]
    assert cam.extension_ids[sdp.EXT_MID] == 4 and sdp.EXT_RID in cam.extension_ids
    assert cam.ssrcs == (media_ssrc,) and cam.rtx_ssrcs == {media_ssrc: rtx_ssrc}
    assert cam.msid == sdp.Msid(stream_id, track_id)
    assert cam.rids == () and cam.direction == "recvonly"


def test_answer_to_chromium_simulcast_offer_receives_the_three_rids() -> None:
    text, negotiation = answer(fixture("chromium_simulcast_offer.sdp"))
    (video,) = sdp.SessionDescription.parse(text).media
    assert video.rids == (sdp.Rid("q", "recv"), sdp.Rid("h", "recv"), sdp.Rid("f", "recv"))
    assert "a=simulcast:recv q;h;f" in lines_of(video)
    media = negotiation.media["0"]
    assert media.rids == ("q", "h", "f") and media.paused_rids == ()
    assert media.ssrcs == ()  # learned from the rid header extension, not from SDP
    assert media.extension_ids[sdp.EXT_RID] == 10
    assert media.extension_ids[sdp.EXT_REPAIRED_RID] == 11


def test_simulcast_is_not_answered_without_the_rid_extension() -> None:
    policy = sdp.CodecPolicy(header_extensions=(sdp.EXT_MID, sdp.EXT_TRANSPORT_CC))
    text, negotiation = answer(fixture("chromium_simulcast_offer.sdp"), policy)
    (video,) = sdp.SessionDescription.parse(text).media
    assert video.rids == () and video.simulcast is None
    assert negotiation.media["0"].rids == ()
    assert {e.uri for e in video.extmaps} == {sdp.EXT_MID, sdp.EXT_TRANSPORT_CC}
    vp8 = video.codec(96)
    assert vp8 is not None and "goog-remb" not in vp8.rtcp_feedback  # no abs-send-time


def test_paused_and_alternative_simulcast_streams_are_answered_as_offered() -> None:
    offer_text = fixture("chromium_simulcast_offer.sdp").replace(
        "a=simulcast:send q;h;f", "a=simulcast:send q;h,f;~f2"
    ).replace("a=rid:f send\r\n", "a=rid:f send\r\na=rid:f2 send max-width=1280\r\n")
    text, negotiation = answer(offer_text)
    (video,) = sdp.SessionDescription.parse(text).media
    assert "a=simulcast:recv q;h,f;~f2" in lines_of(video)
    assert "a=rid:f2 recv" in lines_of(video)
    assert negotiation.media["0"].rids == ("q", "h", "f", "f2")
    assert negotiation.media["0"].paused_rids == ("f2",)


def test_h264_preferred_offer_keeps_the_publishers_order() -> None:
    text, negotiation = answer(fixture("chromium_h264_offer.sdp"))
    (video,) = sdp.SessionDescription.parse(text).media
    assert video.fmts == ("102", "103", "108", "109", "96", "97")
    assert [c.name for c in negotiation.media["0"].codecs] == ["H264", "H264", "VP8"]
    text, negotiation = answer(
        fixture("chromium_h264_offer.sdp"),
        sdp.CodecPolicy(video_codecs=("H264",), h264_profile_level_ids=("42e01f",)),
    )
    (video,) = sdp.SessionDescription.parse(text).media
    assert video.fmts == ("108", "109")


def test_answer_to_aiortc_offer() -> None:
    offer_text = fixture("aiortc_audio_offer.sdp")
    text, negotiation = answer(offer_text)
    d = sdp.SessionDescription.parse(text)
    (audio,) = d.media
    assert audio.fmts == ("96",) and audio.direction == "recvonly"
    assert not d.extmap_allow_mixed
    assert {e.uri: e.id for e in audio.extmaps} == {sdp.EXT_MID: 1, sdp.EXT_AUDIO_LEVEL: 2}
    assert [f.algorithm for f in negotiation.remote_fingerprints] == [
        "sha-256", "sha-384", "sha-512"
    ]
    assert negotiation.media["0"].ssrcs == tuple(
        int(s) for s in found(r"a=ssrc:(\d+) ", offer_text)
    )
    assert negotiation.media["0"].codecs[0].rtcp_feedback == ()
    assert not negotiation.data_channel


@pytest.mark.parametrize(
    ("allow_dtx", "allow_stereo", "fmtp"),
    [
        (True, True, "minptime=10;useinbandfec=1;stereo=1;usedtx=1"),
        (True, False, "minptime=10;useinbandfec=1;usedtx=1"),
        (False, True, "minptime=10;useinbandfec=1;stereo=1"),
        (False, False, "minptime=10;useinbandfec=1"),
    ],
)
def test_opus_stereo_and_dtx_follow_policy_and_offer(
    allow_dtx: bool, allow_stereo: bool, fmtp: str
) -> None:
    offer_text = fixture("chromium_av_datachannel_offer.sdp").replace(
        "a=fmtp:111 minptime=10;useinbandfec=1", "a=fmtp:111 minptime=10;useinbandfec=1;"
        "stereo=1;usedtx=1"
    )
    policy = sdp.CodecPolicy(allow_dtx=allow_dtx, allow_stereo=allow_stereo)
    text, negotiation = answer(offer_text, policy)
    assert f"a=fmtp:111 {fmtp}" in text.split("\r\n")
    assert negotiation.media["0"].codecs[0].fmtp == fmtp
    # Without them in the offer, the answer never adds them.
    plain, _ = answer(fixture("chromium_av_datachannel_offer.sdp"), policy)
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in plain.split("\r\n")


def test_unacceptable_media_is_rejected_and_keeps_its_mid() -> None:
    base = fixture("chromium_av_datachannel_offer.sdp")
    video_start = base.index("m=video")
    video_end = base.index("m=application")
    vp9_only = re.sub(
        r"m=video (\d+) UDP/TLS/RTP/SAVPF [0-9 ]+", r"m=video \1 UDP/TLS/RTP/SAVPF 98 99",
        base[video_start:video_end],
    )
    vp9_only = "\r\n".join(
        line for line in vp9_only.split("\r\n")
        if not re.match(r"a=(rtpmap|rtcp-fb|fmtp):(\d+)", line)
        or re.match(r"a=(rtpmap|rtcp-fb|fmtp):(98|99) ", line)
    )
    text, negotiation = answer(base[:video_start] + vp9_only + base[video_end:])
    d = sdp.SessionDescription.parse(text)
    assert d.bundle == ("0", "2")
    rejected = d.media[1]
    assert (rejected.port, rejected.mid, rejected.direction) == (0, "1", "inactive")
    assert rejected.candidates == () and rejected.ice_ufrag is None
    assert negotiation.rejected_mids == ("1",) and list(negotiation.media) == ["0"]


def test_offer_without_audio_policy_rejects_audio() -> None:
    text, negotiation = answer(
        fixture("chromium_av_datachannel_offer.sdp"), sdp.CodecPolicy(audio_codecs=())
    )
    assert sdp.SessionDescription.parse(text).media[0].port == 0
    assert negotiation.rejected_mids == ("0",)


def test_recvonly_media_in_a_publisher_offer_is_answered_inactive() -> None:
    offer_text = fixture("aiortc_audio_offer.sdp").replace("a=sendrecv", "a=recvonly")
    text, negotiation = answer(offer_text)
    assert sdp.SessionDescription.parse(text).media[0].direction == "inactive"
    assert negotiation.media["0"].direction == "inactive"


def test_legacy_sim_group_gives_ssrcs_in_layer_order_with_their_rtx() -> None:
    offer_text = fixture("chromium_av_datachannel_offer.sdp").replace(
        found(r"(a=ssrc-group:FID \d+ \d+\r\n)", fixture("chromium_av_datachannel_offer.sdp"))[0],
        "a=ssrc-group:SIM 30 10 20\r\na=ssrc-group:FID 10 11\r\na=ssrc-group:FID 20 21\r\n"
        "a=ssrc-group:FID 30 31\r\n",
    )
    _, negotiation = answer(offer_text)
    media = negotiation.media["1"]
    assert media.ssrcs == (30, 10, 20)
    assert media.rtx_ssrcs == {10: 11, 20: 21, 30: 31}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("a=setup:actpass", "a=setup:passive",
         "line 29: a=setup:passive in the offer: the SFU is always the DTLS server, so the offer "
         "must be actpass or active"),
        ("a=group:BUNDLE 0\r\n", "",
         "the offer has no a=group:BUNDLE: the SFU bundles all media on one port"),
        ("a=mid:0\r\n", "", "line 7: the m=audio section has no a=mid"),
        ("a=ice-pwd:", "a=ice-pwx:",
         "the offer has no a=ice-ufrag and a=ice-pwd"),
    ],
)
def test_offers_the_sfu_cannot_answer(old: str, new: str, message: str) -> None:
    text = fixture("aiortc_audio_offer.sdp")
    assert old in text
    if old == "a=mid:0\r\n":
        text = text.replace("a=group:BUNDLE 0", "a=group:BUNDLE")
    with pytest.raises(ValueError) as raised:
        answer(text.replace(old, new))
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ice_ufrag": "ab"}, "bad ice_ufrag 'ab': expected 4 to 256 ice-chars (A-Z a-z 0-9 + /)"),
        ({"ice_pwd": "short"},
         "bad ice_pwd 'short': expected 22 to 256 ice-chars (A-Z a-z 0-9 + /)"),
        ({"fingerprints": []}, "no fingerprint: DTLS needs the certificate's fingerprint"),
        ({"candidates": []},
         "no candidate: an ICE-lite server is reachable only at its candidates"),
        ({"candidates": ["127.0.0.1 7882"]},
         "bad candidate '127.0.0.1 7882': expected '<foundation> <component> <transport> "
         "<priority> <address> <port> typ <type> ...'"),
    ],
)
def test_bad_local_parameters(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "ice_ufrag": UFRAG, "ice_pwd": PWD, "fingerprints": [FINGERPRINT],
        "candidates": [CANDIDATE], "policy": sdp.CodecPolicy(),
    }
    with pytest.raises(ValueError) as raised:
        sdp.answer_publisher_offer(fixture("aiortc_audio_offer.sdp"), **(arguments | kwargs))
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audio_codecs": ("PCMU",)}, "unsupported audio codec 'PCMU': expected opus"),
        ({"video_codecs": ("VP9",)}, "unsupported video codec 'VP9': expected VP8 or H264"),
        ({"video_codecs": ("vp8", "VP8")}, "video_codecs lists a codec twice: ('vp8', 'VP8')"),
        ({"header_extensions": ("urn:3gpp:video-orientation",)},
         "unsupported header extension 'urn:3gpp:video-orientation'"),
        ({"rtcp_feedback": ("nack rpsi",)}, "unsupported rtcp feedback 'nack rpsi'"),
        ({"h264_profile_level_ids": ("42e0",)},
         "bad H.264 profile-level-id '42e0': expected 6 hex digits"),
    ],
)
def test_codec_policy_is_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        sdp.CodecPolicy(**kwargs)
    assert str(raised.value) == message
    assert sdp.CodecPolicy(video_codecs=("h264", "vp8")).video_codecs == ("H264", "VP8")


# -- subscriber offers --------------------------------------------------------------------


def test_subscriber_offer_layout() -> None:
    text, state = offer([track("0", "audio", "TR_mic", 1000), track("1", "video", "TR_cam", 2000)],
                        version=1)
    d = sdp.SessionDescription.parse(text)
    assert d.origin.session_id == 77 and d.origin.version == 1
    assert d.ice_lite and d.bundle == ("0", "1", "2")
    audio, video, data = d.media
    for section in d.media:
        assert (section.setup, section.ice_ufrag, section.candidates) == (
            "actpass", UFRAG, (CANDIDATE,)
        )
        assert section.end_of_candidates and section.port == 7882
    assert audio.direction == video.direction == "sendonly"
    assert audio.msids == (sdp.Msid("PA_alice", "TR_mic"),)
    assert [c.name for c in audio.codecs] == ["opus"]
    assert {e.uri for e in audio.extmaps} == {
        sdp.EXT_AUDIO_LEVEL, sdp.EXT_ABS_SEND_TIME, sdp.EXT_TRANSPORT_CC, sdp.EXT_MID
    }
    assert {e.uri for e in video.extmaps} == {
        sdp.EXT_ABS_SEND_TIME, sdp.EXT_TRANSPORT_CC, sdp.EXT_MID
    }
    assert video.fmts == ("96", "97", "102", "103")
    assert video.ssrc_groups == (sdp.SsrcGroup("FID", (2000, 2001)),)
    assert sdp.SsrcAttribute(2001, "msid", "PA_alice TR_cam") in video.ssrcs
    assert sdp.SsrcAttribute(2000, "cname", "PA_alice") in video.ssrcs
    assert (data.kind, data.mid, data.sctp_port) == ("application", "2", 5000)
    assert [m.mid for m in state.media] == ["0", "1", "2"] and state.sdp == text


def test_captured_subscriber_offer_is_reproduced_and_chromiums_answer_applies() -> None:
    text, state = load_capture().subscriber_offer()
    assert text == fixture("subscriber_offer.sdp")
    negotiation = sdp.apply_subscriber_answer(state, fixture("chromium_subscriber_answer.sdp"))
    assert negotiation.version == 1 and negotiation.remote_setup == "active"
    assert negotiation.remote_ice_ufrag == found(
        r"a=ice-ufrag:(\S+)", fixture("chromium_subscriber_answer.sdp")
    )[0]
    assert (negotiation.data_mid, negotiation.sctp_port, negotiation.max_message_size) == (
        "2", 5000, 262144
    )
    audio, video = negotiation.media["0"], negotiation.media["1"]
    assert audio.direction == video.direction == "recvonly"
    assert audio.codecs == (
        sdp.NegotiatedCodec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1", None,
                            ("transport-cc",)),
    )
    assert [(c.payload_type, c.name, c.rtx_payload_type) for c in video.codecs] == [
        (96, "VP8", 97), (102, "H264", 103)
    ]
    assert video.extension_ids == {
        sdp.EXT_ABS_SEND_TIME: 2, sdp.EXT_TRANSPORT_CC: 3, sdp.EXT_MID: 4
    }
    assert video.track is not None and video.track.track_id == "TR_cam"


def test_renegotiation_keeps_m_sections_and_bumps_the_version() -> None:
    mic, cam = track("0", "audio", "TR_mic", 1000), track("1", "video", "TR_cam", 2000)
    text1, state1 = offer([mic, cam], version=1)
    screen = track(state1.next_mid(), "video", "TR_screen", 3000)
    assert screen.mid == "3"  # 2 is the data channel
    text2, state2 = offer([mic, cam, screen], version=2, previous=state1)
    text3, state3 = offer([mic, screen], version=3, previous=state2)  # camera removed
    assert state3.reusable_mid("video") == "1" and state3.reusable_mid("audio") is None
    bob = track("1", "video", "TR_bob", 4000, stream="PA_bob")
    text4, state4 = offer([mic, screen, bob], version=4, previous=state3)
    versions, orders = [], []
    for text in (text1, text2, text3, text4):
        d = sdp.SessionDescription.parse(text)
        versions.append(d.origin.version)
        orders.append([(m.kind, m.mid) for m in d.media])
        assert d.origin.session_id == 77 and d.bundle == tuple(m.mid for m in d.media)
    assert versions == [1, 2, 3, 4]
    assert orders[0] == [("audio", "0"), ("video", "1"), ("application", "2")]
    assert orders[1] == orders[2] == orders[3] == orders[0] + [("video", "3")]
    removed = sdp.SessionDescription.parse(text3).media[1]
    assert (removed.direction, removed.port, removed.msids, removed.ssrcs) == (
        "inactive", 7882, (), ()
    )
    assert removed.codecs and removed.ice_ufrag == UFRAG  # still bundled, still negotiable
    reused = sdp.SessionDescription.parse(text4).media[1]
    assert reused.direction == "sendonly" and reused.msids == (sdp.Msid("PA_bob", "TR_bob"),)
    assert [m.track.track_id if m.track else None for m in state4.media] == [
        "TR_mic", "TR_bob", None, "TR_screen"
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("same_version", "version 1 does not increase (the previous offer had 1)"),
        ("other_session", "session_id 78 differs from the previous offer's 77"),
        ("wrong_kind", "track 'TR_x': mid '0' is the m-section of audio, not video"),
        ("same_mid", "two tracks with mid '0'"),
        ("vp9", "track 'TR_v': codec 'VP9' is not allowed by the policy (VP8, H264)"),
    ],
)
def test_inconsistent_subscriber_offers_are_refused(change: str, message: str) -> None:
    mic = track("0", "audio", "TR_mic", 1000)
    _, state = offer([mic], version=1)
    kwargs: dict[str, Any] = {
        "ice_ufrag": UFRAG, "ice_pwd": PWD, "fingerprints": [FINGERPRINT],
        "candidates": [CANDIDATE], "session_id": 77, "version": 2, "previous": state,
    }
    tracks = [mic]
    if change == "same_version":
        kwargs["version"] = 1
    elif change == "other_session":
        kwargs["session_id"] = 78
    elif change == "wrong_kind":
        tracks = [track("0", "video", "TR_x", 5000)]
    elif change == "same_mid":
        tracks = [mic, track("0", "audio", "TR_y", 5000)]
    else:
        vp9 = sdp.NegotiatedCodec(98, "VP9", 90000)
        tracks = [sdp.SubscriberTrack(mid="1", kind="video", stream_id="s", track_id="TR_v",
                                      ssrc=1, codecs=(vp9,))]
    with pytest.raises(ValueError) as raised:
        sdp.offer_subscriber(tracks, **kwargs)
    assert str(raised.value) == message


def test_subscriber_track_is_checked() -> None:
    with pytest.raises(ValueError, match="rtx_ssrc is for video tracks"):
        sdp.SubscriberTrack(mid="0", kind="audio", stream_id="s", track_id="t", ssrc=1,
                            rtx_ssrc=2, codecs=sdp.default_codecs("audio"))
    with pytest.raises(ValueError, match="no codecs"):
        sdp.SubscriberTrack(mid="0", kind="audio", stream_id="s", track_id="t", ssrc=1, codecs=())
    with pytest.raises(ValueError, match="bad stream_id 'a b'"):
        sdp.SubscriberTrack(mid="0", kind="audio", stream_id="a b", track_id="t", ssrc=1,
                            codecs=sdp.default_codecs("audio"))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("a=setup:active", "a=setup:passive",
         "line 14: a=setup:passive in the answer: the SFU offered actpass and is always the "
         "DTLS server, so the answer must be active"),
        ("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103", "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 100",
         "line 26: payload type 100 was not offered in the m-section with a=mid:1"),
        ("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=recvonly\r\na=rtcp-mux\r\n"
         "a=rtcp-rsize\r\na=rtpmap:96",
         "a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=recvonly\r\na=rtcp-mux\r\n"
         "a=rtcp-rsize\r\na=rtpmap:96",
         "line 37: a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:mid was not offered with that id"),
        ("a=mid:1", "a=mid:7", "line 26: m=video with a=mid:7 answers the offer's m=video with "
         "a=mid:1"),
        ("a=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:111",
         "a=sendrecv\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:111",
         "line 20: a=sendrecv answers a sendonly m-section (mid 0)"),
        ("a=group:BUNDLE 0 1 2\r\n", "", "the answer has no a=group:BUNDLE"),
    ],
)
def test_subscriber_answers_that_do_not_match_the_offer(old: str, new: str, message: str) -> None:
    _, state = load_capture().subscriber_offer()
    text = fixture("chromium_subscriber_answer.sdp")
    assert old in text
    if old == "a=mid:1":
        text = text.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 7 2")
    with pytest.raises(ValueError) as raised:
        sdp.apply_subscriber_answer(state, text.replace(old, new, 1))
    assert str(raised.value) == message


def test_rejected_subscriber_section_is_reported() -> None:
    _, state = load_capture().subscriber_offer()
    text = fixture("chromium_subscriber_answer.sdp").replace(
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103", "m=video 0 UDP/TLS/RTP/SAVPF 96 97 102 103"
    ).replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 2")
    negotiation = sdp.apply_subscriber_answer(state, text)
    assert negotiation.media["1"].direction == "rejected"
    assert negotiation.media["1"].codecs == ()


# -- the transport-only interface ---------------------------------------------------------


def test_parse_offer_and_build_answer_still_serve_the_transport_tests() -> None:
    offer_text = fixture("chromium_av_datachannel_offer.sdp")
    parsed = sdp.parse_offer(offer_text)
    assert parsed.ice_ufrag == found(r"a=ice-ufrag:(\S+)", offer_text)[0]
    assert (parsed.setup, parsed.bundle) == ("actpass", ["0", "1", "2"])
    assert parsed.fingerprints == [f"sha-256 {parsed.media[0].fingerprints[0].value}"]
    assert parsed.media[-1].sctp_port == 5000 and parsed.media[0].fmts[0] == "111"

    class Credentials:
        ufrag, pwd = UFRAG, PWD

    text = sdp.build_answer(
        parsed, credentials=Credentials(), fingerprints=[" ".join(FINGERPRINT)],
        candidate=("127.0.0.1", 7882),
    )
    d = sdp.SessionDescription.parse(text)
    assert [m.fmts for m in d.media] == [("111",), ("96", "97"), ("webrtc-datachannel",)]
    assert d.media[0].candidates == ("1 1 udp 2130706431 127.0.0.1 7882 typ host",)


# -- Chromium accepts what we write -------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PAGE_URL = "http://localhost/sdp-test"  # localhost is a secure context: getUserMedia works

JS_PUBLISHER_OFFER = """async kind => {
  if (window.pc) window.pc.close();
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: true, video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const audio = stream.getAudioTracks()[0], video = stream.getVideoTracks()[0];
  if (kind === 'av_data') {
    pc.addTransceiver(audio, {direction: 'sendonly', streams: [stream]});
    pc.addTransceiver(video, {direction: 'sendonly', streams: [stream]});
    pc.createDataChannel('chat');
  } else if (kind === 'simulcast') {
    pc.addTransceiver(video, {direction: 'sendonly', streams: [stream], sendEncodings: [
      {rid: 'q', scaleResolutionDownBy: 4}, {rid: 'h', scaleResolutionDownBy: 2},
      {rid: 'f', scaleResolutionDownBy: 1}]});
  } else {
    const t = pc.addTransceiver(video, {direction: 'sendonly', streams: [stream]});
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
    const h264 = codecs.filter(c => c.mimeType === 'video/H264');
    t.setCodecPreferences(kind === 'h264'
      ? h264.concat(codecs.filter(c => c.mimeType !== 'video/H264'))
      : codecs.filter(c => c.mimeType === 'video/VP9' || c.mimeType === 'video/rtx'));
    pc.addTransceiver(audio, {direction: 'sendonly', streams: [stream]});
  }
  await pc.setLocalDescription();
  return pc.localDescription.sdp;
}"""

JS_SET_ANSWER = """async answer => {
  try {
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
  } catch (e) {
    return {error: String(e)};
  }
  const senders = pc.getSenders().filter(s => s.track && s.track.kind === 'video');
  return {
    state: pc.signalingState,
    transceivers: pc.getTransceivers().map(t => [t.mid, t.currentDirection]),
    encodings: senders.length ? senders[0].getParameters().encodings.map(e => e.rid || '') : [],
    sctp: pc.sctp !== null,
  };
}"""

JS_SUBSCRIBER_PC = """() => {
  if (window.pc) window.pc.close();
  window.pc = new RTCPeerConnection();
  window.tracks = [];
  pc.ontrack = e => tracks.push([e.transceiver.mid, e.track.kind, e.streams.map(s => s.id)]);
  pc.ondatachannel = () => {};
}"""

JS_SET_OFFER = """async offer => {
  try {
    await pc.setRemoteDescription({type: 'offer', sdp: offer});
    await pc.setLocalDescription(await pc.createAnswer());
  } catch (e) {
    return {error: String(e)};
  }
  return {
    answer: pc.localDescription.sdp,
    transceivers: pc.getTransceivers().map(t => [t.mid, t.currentDirection]),
    tracks: tracks,
    sctp: pc.sctp !== null,
  };
}"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip("needs Debian chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory(
        prefix="sfu-sdp-"
    ) as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.route(
                PAGE_URL, lambda route: route.fulfill(body="<html></html>", content_type="text/html")
            )
            page.goto(PAGE_URL)
            yield page
        finally:
            context.close()


@pytest.mark.browser
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["av_data", "simulcast", "h264", "vp9_only"])
def test_chromium_accepts_our_answer(page: Any, kind: str) -> None:
    offer_text = page.evaluate(JS_PUBLISHER_OFFER, kind)
    text, negotiation = answer(offer_text)
    result = page.evaluate(JS_SET_ANSWER, text)
    assert "error" not in result, result["error"]
    assert result["state"] == "stable"
    directions = dict(result["transceivers"])
    if kind == "av_data":
        assert directions == {"0": "sendonly", "1": "sendonly"} and result["sctp"]
        assert negotiation.data_channel
    elif kind == "simulcast":
        assert directions == {"0": "sendonly"}
        assert result["encodings"] == ["q", "h", "f"]  # simulcast survived the answer
        assert negotiation.media["0"].rids == ("q", "h", "f")
    elif kind == "h264":
        assert negotiation.media["0"].codecs[0].name == "H264"
        assert directions == {"0": "sendonly", "1": "sendonly"}
    else:  # the VP9-only video is rejected: Chromium stops its transceiver
        assert negotiation.rejected_mids == ("0",)
        assert directions == {"1": "sendonly"}


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_chromium_accepts_subscriber_offers_through_renegotiation(page: Any) -> None:
    page.evaluate(JS_SUBSCRIBER_PC)
    mic, cam = track("0", "audio", "TR_mic", 1000), track("1", "video", "TR_cam", 2000)

    def negotiate(text: str, state: sdp.SubscriberOfferState) -> tuple[Any, sdp.SubscriberNegotiation]:
        result = page.evaluate(JS_SET_OFFER, text)
        assert "error" not in result, result["error"]
        negotiation = sdp.apply_subscriber_answer(state, result["answer"])
        answered = sdp.SessionDescription.parse(result["answer"])
        assert [m.mid for m in answered.media] == [m.mid for m in state.media]
        return result, negotiation

    text, state = offer([mic, cam], version=1)
    result, negotiation = negotiate(text, state)
    assert result["tracks"] == [["0", "audio", ["PA_alice"]], ["1", "video", ["PA_alice"]]]
    assert result["sctp"] and negotiation.data_mid == "2"
    assert {m.mid: m.direction for m in negotiation.media.values()} == {
        "0": "recvonly", "1": "recvonly"
    }
    assert [c.payload_type for c in negotiation.media["1"].codecs] == [96, 102]

    screen = track(state.next_mid(), "video", "TR_screen", 3000)
    text, state = offer([mic, cam, screen], version=2, previous=state)
    result, negotiation = negotiate(text, state)
    assert result["tracks"][-1] == ["3", "video", ["PA_alice"]]

    text, state = offer([mic, screen], version=3, previous=state)  # the camera goes away
    result, negotiation = negotiate(text, state)
    assert dict(result["transceivers"])["1"] == "inactive"
    assert negotiation.media["1"].direction == "inactive"

    reused = state.reusable_mid("video")
    assert reused == "1"
    bob = track(reused, "video", "TR_bob", 4000, stream="PA_bob")
    text, state = offer([mic, screen, bob], version=4, previous=state)
    result, negotiation = negotiate(text, state)
    assert result["tracks"][-1] == ["1", "video", ["PA_bob"]]
    assert dict(result["transceivers"]) == {
        "0": "recvonly", "1": "recvonly", "3": "recvonly"
    }
    assert negotiation.version == 4
