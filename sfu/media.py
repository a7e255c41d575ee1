"""Media shell: every participant's two WebRTC transports on the node's one UDP port.

``MediaNode`` owns the shared UDP endpoint and the DTLS certificate; one ``Peer`` per
participant holds its publisher transport (the client offers) and subscriber transport (the
server offers; one offer at a time). Room state stays in :class:`sfu.rooms.RoomService`:
after every change the signaling shell calls :meth:`MediaNode.reconcile`, which brings each
dirty room's subscriber transports in line with its published tracks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import msgpack
from aiortc import RTCCertificate, RTCDataChannel, RTCDataChannelParameters, RTCSctpTransport

from sfu import log, metrics
from sfu.allocator import Allocator, Probe, TrackDemand
from sfu.bwe import SendSideBwe
from sfu.config import Config
from sfu.forwarder import DownTrack, ForwardCounters, PublishedTrack, Receiver
from sfu.layers import QUALITIES
from sfu.negotiation import SubscriberNegotiator
from sfu.room_media import MediaParticipant, MediaPermission, MediaTrack, RoomMedia
from sfu.rooms import Out, Participant, RoomError, RoomService
from sfu.rtcp_feedback import PublisherFeedback
from sfu.rtp.header import RtpView, TsUnwrapper, parse_rtp, read_mid, read_rid
from sfu.rtp.ntp import ntp_middle32, unix_from_ntp
from sfu.rtp.rtcp import (
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    SenderReport,
    TransportCc,
    parse_rtcp,
)
from sfu.rtp.rtx import unwrap_rtx
from sfu.store.journal import SessionUsage
from sfu.webrtc import sdp as sdpmod
from sfu.webrtc.dtls import DtlsSrtpTransport, fingerprints_from_sdp_values, serve_transport
from sfu.webrtc.ice import IceCredentials
from sfu.webrtc.udp import UdpEndpoint
from signaling import errors as E

logger = log.get("sfu.media")

DATA_LABELS = ("_reliable", "_lossy")
# Upstream NACKs and down-track SRs are driven by one node-wide timer at this interval
# (a NACK is first sent 5 ms after a gap at the earliest, retried every RTT or 20 ms at most).
NACK_TICK_S = 0.04
#: Debugging aid: with this environment variable naming a file, every allocation's inputs
#: (time, subscriber, estimate, track demands) are appended to it as JSON lines, so an
#: allocation problem seen in the field can be replayed through the pure Allocator.
ALLOCATOR_TRACE = os.environ.get("SFU_ALLOCATOR_TRACE", "")
#: How often a subscriber's bandwidth is shared out again (sooner when the allocator asks).
ALLOCATE_INTERVAL_S = 0.25
#: A REMB-only subscriber (no transport-cc) is managed once, for this long, its REMB stayed
#: below what is being sent to it while it reported loss.
REMB_CONGESTION_LOSS = 0.05
REMB_CONGESTION_S = 3.0
PROBE_PACKET_BYTES = 300


def _subscriber_feedback(data: bytes) -> bytes:
    """The parts of a compound RTCP packet the SFU acts on: RR, NACK, PLI, FIR, and the
    bandwidth feedback (transport-cc, REMB).

    Subscriber RTCP is scanned by its 4-byte headers first and only these are parsed (SDES,
    for one, is skipped).
    A malformed length keeps the rest, so the parser reports it.
    """
    n = len(data)
    pos = 0
    keep: list[bytes] = []
    while pos + 4 <= n:
        length = ((data[pos + 2] << 8 | data[pos + 3]) + 1) * 4
        pt = data[pos + 1]
        fmt = data[pos] & 0x1F
        if pos + length > n:
            keep.append(data[pos:])
            break
        if pt == 201 or (pt == 205 and fmt in (1, 15)) or (pt == 206 and fmt in (1, 4, 15)):
            keep.append(data[pos:pos + length])
        pos += length
    if len(keep) == 1:
        return keep[0]
    return b"".join(keep)


def _layer_layout(media: sdpmod.PublishedMedia, announced: list[dict[str, Any]]
                  ) -> tuple[tuple[str, ...], list[str] | None, list[tuple[int, int]] | None]:
    """A simulcast m-section's rids lowest layer first, with their qualities and sizes.

    ``add_track``'s ``simulcast_layers`` order them when they name the offer's rids (by
    quality, then width); otherwise the ``a=simulcast`` order is taken as lowest first.
    """
    rids = media.rids
    if len(rids) < 2:
        return (), None, None
    by_rid = {layer["rid"]: layer for layer in announced if layer.get("rid") in rids}
    if len(by_rid) != len(rids):
        return rids, None, None
    ordered = sorted(rids, key=lambda r: (QUALITIES.index(by_rid[r]["quality"]),
                                         by_rid[r]["width"], by_rid[r]["height"]))
    return (tuple(ordered), [by_rid[r]["quality"] for r in ordered],
            [(by_rid[r]["width"], by_rid[r]["height"]) for r in ordered])


class MediaCounters:
    """Plain counters the metrics shell reads; nothing here logs per packet."""

    __slots__ = ("data_in", "data_out", "data_dropped", "dtls_failures", "ice_restarts",
                 "subscriber_offers", "publisher_answers")

    def __init__(self) -> None:
        self.data_in = 0
        self.data_out = 0
        self.data_dropped: dict[str, int] = {}
        self.dtls_failures = 0
        self.ice_restarts = 0
        self.subscriber_offers = 0
        self.publisher_answers = 0

    def drop(self, reason: str) -> None:
        self.data_dropped[reason] = self.data_dropped.get(reason, 0) + 1


class Peer:
    """One participant's publisher and subscriber transports."""

    def __init__(self, node: MediaNode, room_media: RoomMedia, p: MediaParticipant) -> None:
        self.node = node
        self.room_media = room_media
        self.participant = p
        self.session_id = p.session_id
        self.pub_creds = IceCredentials.generate(node.rng)
        self.sub_creds = IceCredentials.generate(node.rng)
        self.pub: DtlsSrtpTransport | None = None
        self.pub_negotiation: sdpmod.PublisherNegotiation | None = None
        self.pub_remote_ufrag = ""
        self.pub_version = 0
        self.sub = serve_transport(node.endpoint, f"{p.session_id}/sub", self.sub_creds,
                                   node.certificate, on_rtcp=self._on_subscriber_rtcp)
        self.sub_started = False
        self.sub_ready = False
        self.sub_state: sdpmod.SubscriberOfferState | None = None
        self.sub_version = 0
        self.sub_tracks: dict[str, sdpmod.SubscriberTrack] = {}  # by track sid
        self.negotiator = SubscriberNegotiator()
        self.sub_channels: dict[str, RTCDataChannel] = {}
        self.pub_sctp: RTCSctpTransport | None = None
        self.sub_sctp: RTCSctpTransport | None = None
        self.feedback: PublisherFeedback | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        # forwarding state
        self.tracks_by_mid: dict[str, PublishedTrack] = {}
        self.receivers_by_ssrc: dict[int, Receiver] = {}
        self.ts_unwrap: dict[int, TsUnwrapper] = {}
        self.rtx_by_ssrc: dict[int, Receiver] = {}
        self.mid_ext_id = 0
        self.rid_ext_id = 0
        self.rrid_ext_id = 0
        #: track_settings of this subscriber, by track sid (kept for down-tracks to come)
        self.track_settings: dict[str, dict[str, Any]] = {}
        self.downtracks: dict[str, DownTrack] = {}  # by track sid
        self.downtracks_by_ssrc: dict[int, DownTrack] = {}
        # usage of this session (call-detail records): down-tracks' start (monotonic), and
        # what the ones already dropped sent and lasted
        self.downtrack_since: dict[str, float] = {}
        self.retired_octets_out = 0
        self.retired_subscribed_s = 0.0
        self.tcc = [1]  # the subscriber transport's transport-wide sequence number
        # the subscriber transport's bandwidth: estimate, allocation, probes
        self.bwe = SendSideBwe()
        # 1.2: one overuse (a keyframe, a probe's overshoot) puts the estimate at 0.85 x
        # what was delivered, below what is allocated; only a larger shortfall is
        # congestion that must move layers down at once
        # probes step 1.3x the estimate (not 2x): a probe overshooting a full link loses
        # media, and a successful probe sets the estimate, so steps chain quickly
        self.allocator = Allocator(tolerance=1.2, probe_step_ratio=1.3)
        self.managed = False  # the estimate limits layers (after the first congestion)
        self._remb_low_since: float | None = None
        self._next_allocation = 0.0
        self._probe: Probe | None = None
        self.sr_sent: dict[int, float] = {}  # SR NTP middle 32 bits -> monotonic send time

    # -- tasks -------------------------------------------------------------------------------
    def spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                self.node.counters.dtls_failures += 1
                logger.warning("transport_failed", what=what, session=self.session_id,
                               participant=self.participant.identity, error=str(exc))

        task.add_done_callback(done)

    # -- publisher ---------------------------------------------------------------------------
    def on_publisher_offer(self, offer_sdp: str, now: float) -> str:
        node = self.node
        try:
            remote = sdpmod.SessionDescription.parse(offer_sdp)
        except ValueError as exc:
            raise RoomError(E.INVALID_MESSAGE, f"offer.sdp: {exc}") from None
        remote_ufrag = next((m.ice_ufrag for m in remote.media if m.ice_ufrag), "") or ""
        first = self.pub is None
        if not first and remote_ufrag and remote_ufrag != self.pub_remote_ufrag:
            # ICE restart: new local credentials too; the old ones stay valid for a while
            self.pub_creds = IceCredentials.generate(node.rng)
            node.endpoint.mux.restart(f"{self.session_id}/pub", self.pub_creds.ufrag,
                                      self.pub_creds.pwd, now)
            node.counters.ice_restarts += 1
        self.pub_version += 1
        try:
            answer, neg = sdpmod.answer_publisher_offer(
                offer_sdp, ice_ufrag=self.pub_creds.ufrag, ice_pwd=self.pub_creds.pwd,
                fingerprints=node.fingerprints, candidates=node.candidates,
                policy=node.policy, session_id=node.sdp_session_id, version=self.pub_version)
        except ValueError as exc:
            raise RoomError(E.INVALID_MESSAGE, f"offer.sdp: {exc}") from None
        self.pub_remote_ufrag = remote_ufrag
        self.pub_negotiation = neg
        if first:
            self.feedback = PublisherFeedback(node.rng.getrandbits(32))
            self.pub = serve_transport(node.endpoint, f"{self.session_id}/pub", self.pub_creds,
                                       node.certificate, now=now,
                                       on_rtp=self._on_publisher_rtp,
                                       on_rtcp=self._on_publisher_rtcp)
            self.spawn(self._start_publisher(neg), "publisher")
        if self.feedback is not None:
            self.feedback.set_negotiation(neg)
        self._match_tracks(neg)
        node.counters.publisher_answers += 1
        return answer

    def _match_tracks(self, neg: sdpmod.PublisherNegotiation) -> None:
        """Tracks announced with add_track are matched to the offer's m-sections by mid."""
        node = self.node

        def ext_id(uri: str) -> int:
            ids = {m.extension_ids.get(uri, 0) for m in neg.media.values()}
            ids.discard(0)
            return min(ids) if ids else 0

        self.mid_ext_id = ext_id(sdpmod.EXT_MID)
        self.rid_ext_id = ext_id(sdpmod.EXT_RID)
        self.rrid_ext_id = ext_id(sdpmod.EXT_REPAIRED_RID)
        for track in self.participant.tracks.values():
            media = neg.media.get(track.mid or "")
            if media is None or media.kind != track.kind or media.direction == "inactive":
                continue
            if track.sid not in node.track_codecs:
                self.room_media.dirty = True  # subscribers get the new track
            node.track_codecs[track.sid] = media.codecs
            if track.sid in node.published:
                continue
            rids, qualities, sizes = _layer_layout(media, track.layers)
            sim_ssrcs = media.ssrcs if not rids and len(media.ssrcs) > 1 else ()
            published = PublishedTrack(
                track_sid=track.sid, kind=track.kind,
                clock_rate=media.codecs[0].clock_rate if media.codecs else 90000,
                codecs={c.payload_type: c.name.upper() if c.name.lower() != "opus" else "opus"
                        for c in media.codecs},
                rtx_pts={c.rtx_payload_type: c.payload_type for c in media.codecs
                         if c.rtx_payload_type is not None},
                audio_level_id=media.extension_ids.get(sdpmod.EXT_AUDIO_LEVEL, 0),
                send_rtcp=self._send_publisher_rtcp,
                sender_ssrc=self.feedback.core.sender_ssrc if self.feedback else 1,
                counters=node.fwd, rids=rids, layers=len(sim_ssrcs),
                qualities=qualities, sizes=sizes, owner_sid=self.participant.sid,
                source=track.source,
                nack=any("nack" in c.rtcp_feedback for c in media.codecs))
            node.published[track.sid] = published
            self.tracks_by_mid[media.mid] = published
            published.set_muted(track.muted, time.monotonic())
            if rids:
                continue  # bound from the first packets' rid header extensions
            # signalled with a=ssrc (aiortc, Firefox) or a=ssrc-group:SIM (lowest first)
            for receiver, ssrc in zip(published.layers, sim_ssrcs or media.ssrcs[:1],
                                      strict=False):
                self._bind(receiver, ssrc)
                rtx_ssrc = media.rtx_ssrcs.get(ssrc)
                if rtx_ssrc is not None:
                    self.rtx_by_ssrc[rtx_ssrc] = receiver

    def _bind(self, receiver: Receiver, ssrc: int) -> None:
        receiver.ssrc = ssrc
        self.receivers_by_ssrc[ssrc] = receiver
        self.ts_unwrap[ssrc] = TsUnwrapper()
        if self.feedback is not None:
            self.feedback.core.bind(ssrc)  # receiver reports start now, not before

    def _send_publisher_rtcp(self, data: bytes) -> None:
        if self.pub is not None and self.pub.state == "connected":
            self.pub.send_rtcp(data)

    # -- the per-packet path (synchronous, inside datagram_received) ---------------------------
    def _on_publisher_rtp(self, data: bytes) -> None:
        now = time.monotonic()
        feedback = self.feedback
        if feedback is None:
            return
        parsed = feedback.core.on_rtp(data, now)
        if parsed is None:
            return
        view, ext_seq = parsed
        receiver = self.receivers_by_ssrc.get(view.ssrc)
        if receiver is None:
            receiver = self._identify(data, view)
            if receiver is None:
                return
        if view.payload_type in receiver.rtx_pts:
            self.node.fwd.unknown_ssrc += 1  # RTX on a media SSRC: not expected
            return
        ext_ts = self.ts_unwrap[view.ssrc].unwrap(view.timestamp)
        receiver.on_packet(data, view, ext_seq, ext_ts, now)

    def _identify(self, data: bytes, view: RtpView) -> Receiver | None:
        """First packets of an SSRC: bind it by its MID header extension, and for a
        simulcast track by its RID (an RTX SSRC by its repaired RID)."""
        fwd = self.node.fwd
        rtx_receiver = self.rtx_by_ssrc.get(view.ssrc)
        if rtx_receiver is not None:
            self._on_upstream_rtx(data, view, rtx_receiver)
            return None
        try:
            mid = read_mid(data, self.mid_ext_id) if self.mid_ext_id else None
            track = self.tracks_by_mid.get(mid) if mid is not None else None
            if track is None:
                fwd.unknown_ssrc += 1
                return None
            is_rtx = view.payload_type in track.rtx_pts
            receiver: Receiver | None = track.layers[0]
            if track.rids:
                ext_id = self.rrid_ext_id if is_rtx else self.rid_ext_id
                rid = read_rid(data, ext_id) if ext_id else None
                receiver = track.layer_for_rid(rid) if rid is not None else None
        except ValueError:
            fwd.unknown_ssrc += 1
            return None
        if receiver is None:
            fwd.unknown_ssrc += 1
            return None
        if is_rtx:
            self._on_upstream_rtx(data, view, receiver)
            return None
        if receiver.ssrc not in (0, view.ssrc):
            fwd.unknown_ssrc += 1
            return None
        self._bind(receiver, view.ssrc)
        return receiver

    def _on_upstream_rtx(self, data: bytes, view: RtpView,
                         receiver: Receiver | None) -> None:
        """A retransmission from the publisher: unwrap it and forward the original."""
        fwd = self.node.fwd
        if receiver is None or not receiver.ssrc:
            fwd.unknown_ssrc += 1
            return
        self.rtx_by_ssrc[view.ssrc] = receiver
        if view.payload_size < 2:
            fwd.dropped_padding += 1  # RTX padding probes are never forwarded
            return
        media_pt = receiver.rtx_pts.get(view.payload_type)
        if media_pt is None:
            fwd.unknown_ssrc += 1
            return
        try:
            _, original = unwrap_rtx(data, media_ssrc=receiver.ssrc, media_payload_type=media_pt)
        except ValueError:
            fwd.unknown_ssrc += 1
            return
        fwd.rtx_upstream += 1
        self._on_publisher_rtp_unwrapped(original)

    def _on_publisher_rtp_unwrapped(self, data: bytes) -> None:
        now = time.monotonic()
        view = parse_rtp(data)
        receiver = self.receivers_by_ssrc.get(view.ssrc)
        stream = self.feedback.core.streams.get(view.ssrc) if self.feedback else None
        if receiver is None or stream is None:
            return
        ext_seq = stream.unwrap.unwrap(view.seq)
        if receiver.cache.get(ext_seq) is not None:
            # a copy of a packet we have (Chromium probes its uplink by resending recent
            # packets on RTX): forwarding it again would look like loss downstream (the
            # subscriber's SRTP replay check drops it) and inflate the layer's bitrate
            self.node.fwd.rtx_duplicates += 1
            return
        ext_ts = self.ts_unwrap[view.ssrc].unwrap(view.timestamp)
        receiver.on_packet(data, view, ext_seq, ext_ts, now)

    def _on_publisher_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        if self.feedback is None:
            return
        for pkt in self.feedback.core.on_rtcp(data, now):
            if isinstance(pkt, SenderReport):
                receiver = self.receivers_by_ssrc.get(pkt.ssrc)
                if receiver is not None:
                    receiver.last_sr = (unix_from_ntp(pkt.ntp_timestamp), pkt.rtp_timestamp, now)

    def _on_subscriber_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        fwd = self.node.fwd
        wanted = _subscriber_feedback(data)
        if not wanted:
            return  # e.g. transport-cc feedback only: used by congestion control, not here
        try:
            packets = parse_rtcp(wanted)
        except ValueError:
            fwd.malformed_rtcp += 1
            return
        for pkt in packets:
            if isinstance(pkt, TransportCc):
                self.bwe.on_feedback(pkt, now)
            elif isinstance(pkt, Remb):
                self.bwe.on_remb(pkt.bitrate_bps, now)
            elif isinstance(pkt, Nack):
                dt = self.downtracks_by_ssrc.get(pkt.media_ssrc)
                if dt is not None:
                    dt.on_nack(list(pkt.lost_seqs), now)
            elif isinstance(pkt, Pli | Fir):
                ssrcs = [e.ssrc for e in pkt.entries] if isinstance(pkt, Fir) else [pkt.media_ssrc]
                for ssrc in ssrcs:
                    dt = self.downtracks_by_ssrc.get(ssrc)
                    if dt is not None:
                        fwd.pli_in += 1
                        dt.request_keyframe(now)
            elif isinstance(pkt, ReceiverReport):
                for block in pkt.reports:
                    dt = self.downtracks_by_ssrc.get(block.ssrc)
                    if dt is not None:
                        dt.loss = block.fraction_lost / 256
                        self.bwe.on_loss_report(dt.loss, now)
                        dt.jitter_s = block.jitter / dt.track.clock_rate
                        dt.reported_at = now
                        if dt.reported_highest >= 0:
                            dt.reported_packets = (block.ext_highest_seq
                                                   - dt.reported_highest) & 0xFFFFFFFF
                        dt.reported_highest = block.ext_highest_seq
                        metrics.packet_loss.labels("down").observe(dt.loss)
                        metrics.jitter.labels("down").observe(dt.jitter_s)
                    sent = self.sr_sent.get(block.lsr)
                    if dt is not None and sent is not None and block.lsr:
                        rtt = now - sent - block.dlsr / 65536
                        if 0 <= rtt < 10:
                            dt.rtt_s = rtt
                            metrics.rtt.observe(rtt)

    # -- down-tracks (after each subscriber answer) ---------------------------------------------
    def _sync_downtracks(self, neg: sdpmod.SubscriberNegotiation) -> None:
        node = self.node
        live: set[str] = set()
        for media in neg.media.values():
            track = media.track
            if track is None or media.direction != "recvonly" or not media.codecs:
                continue
            live.add(track.track_id)
            if track.track_id in self.downtracks:
                continue
            published = node.published.get(track.track_id)
            if published is None:
                continue
            rtx_pt = next((c.rtx_payload_type for c in media.codecs
                           if c.rtx_payload_type is not None), None)
            dt = DownTrack(
                track=published, ssrc=track.ssrc, mid=track.mid,
                pt_map={c.payload_type: c.payload_type for c in media.codecs},
                rtx_ssrc=track.rtx_ssrc if rtx_pt is not None else None, rtx_pt=rtx_pt,
                extension_ids=dict(media.extension_ids), send_rtp=self._send_subscriber_rtp,
                send_rtcp=self._send_subscriber_rtcp, tcc=self.tcc, counters=node.fwd,
                initial_seq=node.rng.getrandbits(15), initial_ts=node.rng.getrandbits(31),
                on_sent=self.bwe.history.on_sent)
            self.downtracks[track.track_id] = dt
            self.downtracks_by_ssrc[dt.ssrc] = dt
            now = time.monotonic()
            self.downtrack_since[track.track_id] = now
            published.add_downtrack(dt, now)  # asks for a keyframe for it
            settings = self.track_settings.get(track.track_id)
            if settings:
                dt.apply_settings(settings, now)
        for sid in [s for s in self.downtracks if s not in live]:
            self._drop_downtrack(sid)

    def _drop_downtrack(self, sid: str) -> None:
        dt = self.downtracks.pop(sid)
        self.downtracks_by_ssrc.pop(dt.ssrc, None)
        dt.track.remove_downtrack(dt)
        self.retired_octets_out += dt.octets
        since = self.downtrack_since.pop(sid, None)
        if since is not None:
            self.retired_subscribed_s += max(0.0, time.monotonic() - since)

    def usage(self, now: float) -> SessionUsage:
        """This session's running totals for its call-detail record (``now``: monotonic)."""
        octets_in = sum(r.octets for t in self.tracks_by_mid.values() for r in t.layers)
        octets_out = self.retired_octets_out + sum(dt.octets for dt in self.downtracks.values())
        subscribed = self.retired_subscribed_s + sum(
            max(0.0, now - since) for since in self.downtrack_since.values())
        scorer = self.room_media.scorer(self.session_id)
        return SessionUsage(
            bytes_in=octets_in, bytes_out=octets_out, subscribed_s=round(subscribed, 3),
            quality_sum=scorer.score_sum if scorer is not None else 0.0,
            quality_samples=scorer.samples if scorer is not None else 0)

    def apply_track_settings(self, msg: dict[str, Any], now: float) -> None:
        """``track_settings``: remembered per track, applied to its down-track (now, or
        when the next subscriber answer creates it)."""
        fields: dict[str, Any] = {k: msg[k] for k in ("disabled", "quality", "width", "height",
                                                      "priority")
                  if k in msg}
        for sid in msg["track_sids"]:
            settings = self.track_settings.setdefault(sid, {})
            if "quality" in fields:  # a quality replaces a size and the other way round
                settings.pop("width", None)
                settings.pop("height", None)
            elif "width" in fields or "height" in fields:
                settings.pop("quality", None)
            settings.update(fields)
            dt = self.downtracks.get(sid)
            if dt is not None:
                dt.apply_settings(settings, now)

    def _send_subscriber_rtp(self, data: bytes) -> None:
        if self.sub_ready:
            self.sub.send_rtp(data)

    def _send_subscriber_rtcp(self, data: bytes) -> None:
        if self.sub_ready:
            self.sub.send_rtcp(data)

    def rtcp_tick(self, now: float, send_reports: bool) -> None:
        """Timers: upstream NACKs (every tick) and down-track Sender Reports (every second)."""
        for receiver in self.receivers_by_ssrc.values():
            receiver.nacks_due(now, 0.05)
        quality_updates = []
        for published in self.tracks_by_mid.values():
            published.tick(now)
            enabled = published.dynacast(now)
            if enabled is not None:
                quality_updates.append({
                    "type": "subscribed_quality_update", "track_sid": published.track_sid,
                    "qualities": [{"quality": q, "enabled": on} for q, on in zip(
                        published.qualities, enabled, strict=False)]})
        if quality_updates and not self.closed:
            self.node.deliver([Out(self.session_id, msg) for msg in quality_updates])
        if self.sub_ready and self.downtracks:
            self._allocate(now)
        if send_reports and self.sub_ready:
            for dt in self.downtracks.values():
                sr = dt.sender_report(now)
                if sr is not None:
                    self.sr_sent[ntp_middle32(int.from_bytes(sr[8:16], "big"))] = now
                    self.node.fwd.sr_out += 1
                    self.sub.send_rtcp(sr)
            if len(self.sr_sent) > 64:
                for key in list(self.sr_sent)[:-32]:
                    del self.sr_sent[key]

    # -- subscriber bandwidth ------------------------------------------------------------
    def _demands(self) -> tuple[list[TrackDemand], int]:
        """What each subscribed track needs, and the sum at the subscriber's max layers."""
        speakers = {s["participant_sid"] for s in self.room_media.speakers.snapshot()}
        demands = []
        total = 0
        for sid, dt in self.downtracks.items():
            track = dt.track
            if track.kind == "audio":
                rate = track.layers[0].bitrate_bps
                demands.append(TrackDemand(track_sid=sid, kind="audio", source=track.source,
                                           max_layer=-1 if dt.disabled else 0,
                                           layer_bitrates_bps=(rate,)))
                total += 0 if dt.disabled else rate
                continue
            rates = tuple(r.bitrate_bps if r.active else 0 for r in track.layers)
            top = dt.selector.max_spatial
            demands.append(TrackDemand(
                track_sid=sid, kind="video", source=track.source, priority=dt.priority,
                is_speaker=track.owner_sid in speakers,
                max_layer=-1 if dt.disabled else top, layer_bitrates_bps=rates))
            if not dt.disabled:
                total += max((r for r in rates[:top + 1] if r), default=0)
        return demands, total

    def _congested(self, demand_bps: int, now: float) -> bool:
        """Whether the estimate should start limiting layers: transport-cc saw congestion
        (the estimator decreased below the demand), or, for a REMB-only subscriber, its
        REMB stayed below what is being sent while it reported loss. (A receiver's REMB
        follows what it receives, and some receivers' estimators never ramp: aiortc's stays
        near 250 kbps whatever arrives, so a low REMB alone means nothing.) Before that the
        estimate is still ramping up from its cautious start and would only hold every
        subscriber at low layers."""
        bwe = self.bwe
        if bwe.source == "transport-cc":
            return bwe.estimate_bps < demand_bps and (
                bwe.state == "decrease" or bwe.usage == "overuse" or bwe.loss_fraction > 0.1)
        if bwe.source == "remb":
            sending = sum(dt.receiver.bitrate_bps for dt in self.downtracks.values()
                          if dt.receiver is not None)
            if bwe.estimate_bps >= 0.8 * sending or bwe.loss_fraction < REMB_CONGESTION_LOSS:
                self._remb_low_since = None
                return False
            if self._remb_low_since is None:
                self._remb_low_since = now
            return now - self._remb_low_since >= REMB_CONGESTION_S
        return False

    def _allocate(self, now: float) -> None:
        """Share the subscriber's estimated bandwidth out over its tracks (every
        ``ALLOCATE_INTERVAL_S``), send probe padding while a probe runs."""
        probe = self._probe
        if probe is not None:
            self._send_probe(probe, now)
        if now < self._next_allocation:
            return
        self._next_allocation = now + ALLOCATE_INTERVAL_S
        demands, demand_bps = self._demands()
        if not self.managed and self._congested(demand_bps, now):
            self.managed = True
        estimate = self.bwe.estimate_bps if self.managed else None
        if ALLOCATOR_TRACE:
            self._trace_allocation(now, estimate, demands)
        allocation = self.allocator.allocate(estimate, demands, now)
        for sid, layer in allocation.layers.items():
            dt = self.downtracks.get(sid)
            if dt is None or dt.disabled:
                continue
            if layer < 0:
                if not dt.bw_paused:
                    dt.set_allocation(-1, now)
            elif dt.bw_paused or dt.selector.alloc_spatial != layer:
                dt.set_allocation(layer, now)
        updates = []
        for sid, state in [(s, "paused") for s in allocation.paused] + [
                (s, "active") for s in allocation.resumed]:
            dt = self.downtracks.get(sid)
            if dt is not None:
                updates.append({"participant_sid": dt.track.owner_sid or "PA_unknown",
                                "track_sid": sid, "state": state})
        if updates:
            self.node.fwd.stream_pauses += len(allocation.paused)
            self.node.deliver([Out(self.session_id, {"type": "stream_state",
                                                     "updates": updates})])
        if allocation.probe is not None:
            self._probe = allocation.probe
        elif not allocation.probing:
            self._probe = None
        if allocation.wake_at is not None:
            self._next_allocation = min(self._next_allocation, allocation.wake_at)

    def _trace_allocation(self, now: float, estimate: int | None,
                          demands: list[TrackDemand]) -> None:
        line = json.dumps({"t": round(now, 3), "subscriber": self.participant.identity,
                           "estimate_bps": estimate, "tracks": [
                               {"track_sid": d.track_sid, "kind": d.kind, "source": d.source,
                                "priority": d.priority, "is_speaker": d.is_speaker,
                                "max_layer": d.max_layer,
                                "layer_bitrates_bps": list(d.layer_bitrates_bps)}
                               for d in demands]})
        with open(ALLOCATOR_TRACE, "a") as f:
            f.write(line + "\n")

    def _send_probe(self, probe: Probe, now: float) -> None:
        """One tick's worth of RTX padding at the probe's rate, on a video down-track (a
        paused one will do: that is how a paused subscriber finds room to resume).

        The probe succeeds when the feedback acknowledges the target rate without the
        delay detector seeing overuse (what it delivered, as libwebrtc judges probes; the
        estimate is then set from it), and stops at once on overuse: padding on top of
        a full queue only loses media."""
        bwe = self.bwe
        acked = bwe.acked_bps or 0.0
        if bwe.usage == "overuse":
            self.allocator.probe_result(False, now)
            self._probe = None
            return
        # judged only after half the window (the acknowledged rate must cover the probe,
        # not a burst before it), and only on the full target: an estimate set from a
        # probe that merely came close would move a track up and straight down again
        halfway = probe.ends_at - probe.duration_s / 2
        if bwe.estimate_bps >= probe.target_bps or (
                now >= halfway and acked >= probe.target_bps):
            bwe.on_probe_result(acked, now)
            self.allocator.probe_result(True, now)
            self._probe = None
            return
        if now >= probe.ends_at:
            self._probe = None
            return
        dt = next((d for d in self.downtracks.values()
                   if d.track.kind == "video" and d.rtx_ssrc is not None), None)
        if dt is None:
            self.allocator.probe_result(False, now)
            self._probe = None
            return
        budget = int(probe.probe_bps * NACK_TICK_S / 8)
        while budget > 0:
            packet = dt.padding(PROBE_PACKET_BYTES, now)
            if packet is None:
                break
            budget -= len(packet)
            self.node.fwd.probe_packets += 1
            self._send_subscriber_rtp(packet)

    async def _start_publisher(self, neg: sdpmod.PublisherNegotiation) -> None:
        assert self.pub is not None
        await self.pub.start(fingerprints_from_sdp_values(
            f"{f.algorithm} {f.value}" for f in neg.remote_fingerprints))
        logger.info("publisher_connected", session=self.session_id,
                    participant=self.participant.identity)
        if self.feedback is not None:
            self.feedback.attach(self.pub)
        if neg.data_channel:
            self.pub_sctp = await self.pub.start_sctp(
                remote_port=neg.sctp_port or sdpmod.DEFAULT_SCTP_PORT,
                max_message_size=self.node.cfg.rtc.data_max_message_bytes)
            self.pub_sctp.on("datachannel", self._on_publisher_channel)

    def _on_publisher_channel(self, channel: RTCDataChannel) -> None:
        label = channel.label if channel.label in DATA_LABELS else "_reliable"

        @channel.on("message")  # type: ignore[misc]
        def on_message(data: bytes | str) -> None:
            self.node.relay_data(self, label, data)

    # -- subscriber --------------------------------------------------------------------------
    def wanted_offer(self) -> str | None:
        """Build the next subscriber offer if none is outstanding (else merge it later)."""
        if self.closed or not self.negotiator.want_offer():
            return None
        if self.sub_started and not self.sub_ready:
            # The first answer is in but ICE/DTLS is still coming up: renegotiating now
            # races the handshake in some clients (aiortc never starts the new receivers).
            # The offer goes out once the transport is connected.
            self.negotiator.dirty = True
            return None
        node = self.node
        self.sub_version += 1
        tracks = list(self.sub_tracks.values())
        try:
            sdp, state = sdpmod.offer_subscriber(
                tracks, ice_ufrag=self.sub_creds.ufrag, ice_pwd=self.sub_creds.pwd,
                fingerprints=node.fingerprints, candidates=node.candidates, policy=node.policy,
                session_id=node.sdp_session_id, version=self.sub_version,
                previous=self.sub_state, data_channel=True,
                max_message_size=node.cfg.rtc.data_max_message_bytes)
        except ValueError:
            logger.exception("subscriber_offer_failed", session=self.session_id)
            return None
        self.sub_state = state
        self.negotiator.offered(self.sub_version)
        node.counters.subscriber_offers += 1
        return sdp

    def on_subscriber_answer(self, answer_sdp: str) -> str | None:
        if self.sub_state is None or self.negotiator.outstanding_version is None:
            raise RoomError(E.INVALID_MESSAGE, "answer.target: no subscriber offer is outstanding")
        try:
            neg = sdpmod.apply_subscriber_answer(self.sub_state, answer_sdp)
        except ValueError as exc:
            raise RoomError(E.INVALID_MESSAGE, f"answer.sdp: {exc}") from None
        if not self.sub_started:
            self.sub_started = True
            self.spawn(self._start_subscriber(neg), "subscriber")
        self._sync_downtracks(neg)
        again = self.negotiator.answered(self.negotiator.outstanding_version)
        return self.wanted_offer() if again else None

    async def _start_subscriber(self, neg: sdpmod.SubscriberNegotiation) -> None:
        await self.sub.start(fingerprints_from_sdp_values(
            f"{f.algorithm} {f.value}" for f in neg.remote_fingerprints))
        self.sub_ready = True
        logger.info("subscriber_connected", session=self.session_id,
                    participant=self.participant.identity)
        if self.negotiator.dirty and self.negotiator.outstanding_version is None:
            sdp = self.wanted_offer()
            if sdp is not None:
                self.node.deliver(self.node.to_outs(self.node.offer_events(self, sdp)))
        if neg.data_channel:
            self.sub_sctp = await self.sub.start_sctp(
                remote_port=neg.sctp_port or sdpmod.DEFAULT_SCTP_PORT,
                max_message_size=self.node.cfg.rtc.data_max_message_bytes)
            for label in DATA_LABELS:
                params = (RTCDataChannelParameters(label=label, ordered=True)
                          if label == "_reliable" else
                          RTCDataChannelParameters(label=label, ordered=False,
                                                   maxRetransmits=0))
                self.sub_channels[label] = RTCDataChannel(self.sub_sctp, params)

    def send_data(self, label: str, text: str) -> bool:
        ch = self.sub_channels.get(label)
        if ch is None or ch.readyState != "open":
            return False
        ch.send(text)
        return True

    async def close(self) -> None:
        self.closed = True
        self.sub_ready = False
        for sid in list(self.downtracks):
            self._drop_downtrack(sid)
        for task in list(self.tasks):
            task.cancel()
        for t in (self.pub, self.sub):
            if t is not None:
                with contextlib.suppress(Exception):
                    await t.stop()
        if self.feedback is not None:
            self.feedback.detach()


class MediaNode:
    def __init__(self, cfg: Config, rooms: RoomService, deliver: Callable[[list[Out]], None],
                 *, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.rooms = rooms
        self.deliver = deliver
        self.rng = rng or random.SystemRandom()
        self.policy = sdpmod.CodecPolicy(
            audio_codecs=tuple(cfg.rtc.audio_codecs), video_codecs=tuple(cfg.rtc.video_codecs),
            allow_dtx=cfg.rtc.allow_dtx, allow_stereo=cfg.rtc.allow_stereo)
        self.peers: dict[str, Peer] = {}  # every room's peers, by session id (for timers)
        self.room_media: dict[str, RoomMedia] = {}
        self.track_codecs: dict[str, tuple[sdpmod.NegotiatedCodec, ...]] = {}
        self.published: dict[str, PublishedTrack] = {}
        self.fwd = ForwardCounters()
        self._ticker: asyncio.TimerHandle | None = None
        self._last_reports = 0.0
        self.counters = MediaCounters()
        self.sdp_session_id = self.rng.getrandbits(62)
        self.endpoint: UdpEndpoint
        self.certificate: RTCCertificate
        self.fingerprints: list[tuple[str, str]] = []
        self.candidates: list[str] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._closing_peers: dict[str, Peer] = {}
        self._closed_totals: dict[str, int] = {"rtp_in": 0, "transport_cc": 0, "rr": 0,
                                                "remb": 0, "malformed": 0, "srtp_early": 0,
                                                "srtp_errors": 0}

    def snapshot(self) -> dict[str, Any]:
        """Counters for the metrics collector (read at scrape time)."""
        totals = dict(self._closed_totals)
        for peer in [*self.peers.values(), *self._closing_peers.values()]:
            self._add_peer_totals(totals, peer)
        c = self.counters
        ep = getattr(self, "endpoint", None)
        return {
            "datagrams_in": ep.datagrams_in if ep else 0,
            "datagrams_out": ep.datagrams_out if ep else 0,
            "bytes_in": ep.bytes_in if ep else 0,
            "bytes_out": ep.bytes_out if ep else 0,
            "drops": {**(dict(ep.drops) if ep else {}),
                      "srtp_before_keys": totals["srtp_early"],
                      "srtp_auth_failed": totals["srtp_errors"]},
            "kernel_rx_drops": ep.kernel_rx_drops() if ep else 0,
            "ice_restarts": c.ice_restarts, "dtls_failures": c.dtls_failures,
            "subscriber_offers": c.subscriber_offers, "data_in": c.data_in,
            "data_out": c.data_out, "data_dropped": dict(c.data_dropped),
            "rtp_in": totals["rtp_in"],
            "malformed_publisher_packets": totals["malformed"],
            "forward": {name: getattr(self.fwd, name) for name in ForwardCounters.__slots__},
            "layer_bitrates": self._layer_bitrates(),
            "tracks_published": len(self.published),
            "tracks_subscribed": sum(len(p.downtracks) for p in self.peers.values()),
            "feedback": {k: totals[k] for k in ("transport_cc", "rr", "remb")},
        }

    def _layer_bitrates(self) -> dict[tuple[str, int], int]:
        rates: dict[tuple[str, int], int] = {}
        for published in self.published.values():
            for receiver in published.layers:
                key = (published.kind, receiver.layer)
                rates[key] = rates.get(key, 0) + receiver.bitrate_bps
        return rates

    @staticmethod
    def _add_peer_totals(totals: dict[str, int], peer: Peer) -> None:
        for transport in (peer.pub, peer.sub):
            if transport is not None:
                totals["srtp_early"] += transport.srtp_early
                totals["srtp_errors"] += transport.srtp_errors
        if peer.feedback is not None:
            core = peer.feedback.core
            totals["rtp_in"] += core.packets
            totals["malformed"] += core.malformed
            for k, v in core.sent.items():
                totals[k] += v

    async def start(self) -> None:
        rtc = self.cfg.rtc
        self.certificate = RTCCertificate.generateCertificate()
        self.fingerprints = [(f.algorithm, f.value) for f in self.certificate.getFingerprints()]
        self.endpoint = await UdpEndpoint.open(
            rtc.bind_host, rtc.udp_port, rcvbuf_bytes=rtc.socket_rcvbuf_bytes,
            sndbuf_bytes=rtc.socket_sndbuf_bytes, on_consent_expired=self._consent_expired)
        host, port = self.endpoint.local_addr[:2]
        announced = rtc.node_ip or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.candidates = [f"1 1 udp 2130706431 {announced} {port} typ host"]
        logger.info("media_started", udp=f"{host}:{port}", announced=announced)
        self._tick()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for peer in list(self.peers.values()):
            await peer.close()
        self.peers.clear()
        if self._closing:
            await asyncio.wait(self._closing, timeout=2)
        self.endpoint.close()

    def _consent_expired(self, transport_id: str) -> None:
        logger.info("ice_consent_expired", transport=transport_id)

    # -- signaling entry points (from the dispatcher) ------------------------------------------
    def handle(self, p: Participant, msg: dict[str, Any], now: float) -> list[Out]:
        """An offer / answer / trickle / track_settings from a participant, through its
        room's media object."""
        op = "track_settings" if msg["type"] == "track_settings" else "signal"
        # the signaling side's ``now`` is wall-clock time (token expiry); media timers
        # (keyframe throttles, ICE consent and restarts) all run on the monotonic clock
        return self.to_outs(self._room_command(
            p.room, {"op": op, "session": p.session_id, "msg": msg}, time.monotonic()))

    def session_usage(self, session_id: str) -> SessionUsage | None:
        """A session's running totals (bytes, subscribed seconds, quality), or None when it
        has no media transports."""
        peer = self.peers.get(session_id) or self._closing_peers.get(session_id)
        return None if peer is None else peer.usage(time.monotonic())

    def all_usage(self) -> dict[str, SessionUsage]:
        now = time.monotonic()
        return {sid: peer.usage(now) for sid, peer in self.peers.items()}

    def participant_media(self, session_id: str) -> dict[str, Any] | None:
        """A participant's media figures for admins (``ParticipantMedia`` in the protocol):
        quality, its published tracks' incoming layers, its subscriptions."""
        peer = self.peers.get(session_id)
        if peer is None:
            return None
        rm = peer.room_media
        out: dict[str, Any] = {"published": [], "subscribed": [],
                               "estimate_bps": peer.bwe.estimate_bps
                               if peer.bwe.source != "start" else None}
        scorer = rm.scorer(session_id)
        if scorer is not None:
            out["quality"], out["score"] = scorer.quality, max(1.0, scorer.score)
        reports = peer.feedback.core.last_reports if peer.feedback is not None else {}
        for sid, track in peer.participant.tracks.items():
            published = self.published.get(sid)
            if published is None:
                continue
            layers = []
            for r in published.layers:
                layer: dict[str, Any] = {"layer": r.layer, "rid": r.rid, "active": r.active,
                                         "bitrate_bps": r.bitrate_bps}
                block = reports.get(r.ssrc)
                if block is not None:
                    layer["loss"] = block.fraction_lost / 256
                    layer["jitter_ms"] = round(block.jitter * 1000 / r.clock_rate, 3)
                layers.append(layer)
            out["published"].append({"track_sid": sid, "kind": track.kind, "layers": layers})
        for sid, dt in peer.downtracks.items():
            sel = dt.selector
            sub: dict[str, Any] = {
                "track_sid": sid, "kind": dt.track.kind,
                "layer": dt.receiver.layer if dt.receiver is not None else -1,
                "target_layer": sel.desired_spatial, "paused": sel.paused,
                "bitrate_bps": dt.receiver.bitrate_bps if dt.receiver is not None else 0}
            if dt.reported_at >= 0:
                sub["loss"] = dt.loss
                sub["jitter_ms"] = round(dt.jitter_s * 1000, 3)
                sub["rtt_ms"] = round(dt.rtt_s * 1000, 3)
            out["subscribed"].append(sub)
        return out

    def _room_command(self, room: str, cmd: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """The process-boundary seam: commands and events cross it msgpack-encoded."""
        rm = self.room_media.get(room)
        if rm is None:
            rm = self.room_media[room] = RoomMedia(self, room)
        events = rm.command(msgpack.unpackb(msgpack.packb(cmd)), now)
        if not rm.members and not rm.peers:
            del self.room_media[room]
        result: list[dict[str, Any]] = msgpack.unpackb(msgpack.packb(events))
        return result

    def to_outs(self, events: list[dict[str, Any]]) -> list[Out]:
        return [Out(e["session"], e["msg"]) for e in events if e["op"] == "send"]

    def signal(self, peer: Peer, msg: dict[str, Any], now: float) -> list[dict[str, Any]]:
        p = peer.participant
        kind, target = msg["type"], msg["target"]
        if kind == "offer" and target == "publisher":
            if not p.permission.can_publish and not p.permission.can_publish_data:
                raise RoomError(E.PERMISSION_DENIED, "token does not grant canPublish")
            answer = peer.on_publisher_offer(msg["sdp"], now)
            reply: dict[str, Any] = {"type": "answer", "target": "publisher", "sdp": answer}
            if "id" in msg:
                reply["id"] = msg["id"]  # replies echo the request id
            out = [self._send(p.session_id, reply)]
            neg = peer.pub_negotiation
            first_mid = next(iter(neg.media), neg.data_mid) if neg is not None else None
            return out + self._trickle(p.session_id, "publisher", first_mid)
        if kind == "answer" and target == "subscriber":
            follow_up = peer.on_subscriber_answer(msg["sdp"])
            if follow_up is not None:
                return self.offer_events(peer, follow_up)
            return []
        if kind == "trickle":
            return []  # ICE-lite: the client's candidates are learned from its checks
        raise RoomError(E.INVALID_MESSAGE,
                        f"{kind}.target: the server does not take a {kind} for the {target} "
                        "transport")

    @staticmethod
    def _send(session_id: str, msg: dict[str, Any]) -> dict[str, Any]:
        return {"op": "send", "session": session_id, "msg": msg}

    def offer_events(self, peer: Peer, sdp: str) -> list[dict[str, Any]]:
        first_mid = peer.sub_state.media[0].mid if peer.sub_state else None
        return [self._send(peer.session_id, {"type": "offer", "target": "subscriber",
                                             "sdp": sdp}),
                *self._trickle(peer.session_id, "subscriber", first_mid)]

    def _trickle(self, session_id: str, target: str, mid: str | None) -> list[dict[str, Any]]:
        """Our host candidate and end-of-candidates (also in the SDP; trickle both ways)."""
        if mid is None:
            return []
        cand = {"candidate": f"candidate:{self.candidates[0]}", "sdp_mid": mid,
                "sdp_mline_index": 0}
        return [self._send(session_id, {"type": "trickle", "target": target,
                                        "candidate": cand}),
                self._send(session_id, {"type": "trickle", "target": target,
                                        "candidate": None, "end_of_candidates": True})]

    # -- room state → room media commands ----------------------------------------------------
    def reconcile(self) -> list[Out]:
        """Turn room-service changes into join / update / leave commands for room media."""
        now = time.monotonic()
        events: list[dict[str, Any]] = []
        live = self.rooms.by_session
        for room_name, rm in list(self.room_media.items()):
            for session in [s for s in rm.members if s not in live
                            or live[s].room != room_name]:
                events += self._room_command(room_name, {"op": "leave", "session": session},
                                             now)
        dirty, self.rooms.dirty_rooms = self.rooms.dirty_rooms, set()
        for room_name in dirty:
            room = self.rooms.rooms.get(room_name)
            if room is None:
                continue
            for p in room.participants.values():
                state = self._snapshot(p)
                media_room = self.room_media.get(room_name)
                known = media_room.members.get(p.session_id) if media_room is not None else None
                if known is not None and known.to_wire() == state:
                    continue
                op = "join" if known is None else "update"
                events += self._room_command(
                    room_name, {"op": op, "session": p.session_id, "participant": state}, now)
        return self.to_outs(events)

    @staticmethod
    def _snapshot(p: Participant) -> dict[str, Any]:
        """The room service's participant as a join/update command's ``participant``."""
        perm = p.permission
        return MediaParticipant(
            session_id=p.session_id, room=p.room, sid=p.sid, identity=p.identity,
            hidden=p.hidden,
            permission=MediaPermission(can_publish=perm.can_publish,
                                       can_subscribe=perm.can_subscribe,
                                       can_publish_data=perm.can_publish_data),
            tracks={t.sid: MediaTrack(t.sid, t.kind, t.mid, [dict(x) for x in t.layers],
                                      t.source, t.muted) for t in p.tracks.values()},
            unsubscribed=set(p.unsubscribed)).to_wire()

    def new_peer(self, rm: RoomMedia, member: MediaParticipant) -> Peer:
        peer = Peer(self, rm, member)
        self.peers[member.session_id] = peer
        return peer

    def drop_peer(self, peer: Peer) -> None:
        self.peers.pop(peer.session_id, None)
        self._closing_peers[peer.session_id] = peer  # still counted until its transports stop
        self._forget_tracks(peer)
        task = asyncio.get_running_loop().create_task(peer.close())
        self._closing.add(task)

        def closed(t: asyncio.Task[None]) -> None:
            self._closing.discard(t)
            if self._closing_peers.pop(peer.session_id, None) is peer:
                self._add_peer_totals(self._closed_totals, peer)

        task.add_done_callback(closed)

    def _forget_tracks(self, peer: Peer) -> None:
        for sid in peer.participant.tracks:
            self.track_codecs.pop(sid, None)
            published = self.published.pop(sid, None)
            if published is not None:
                for dt in list(published.downtracks):
                    published.remove_downtrack(dt)

    def _tick(self) -> None:
        now = time.monotonic()
        send_reports = now - self._last_reports >= 1.0
        if send_reports:
            self._last_reports = now
        for peer in list(self.peers.values()):
            try:
                peer.rtcp_tick(now, send_reports)
            except Exception:  # one peer's failure must not stop the others' timers
                logger.exception("rtcp_tick_failed", session=peer.session_id)
        events: list[dict[str, Any]] = []
        for name, rm in list(self.room_media.items()):
            try:
                events += rm.tick(now)
            except Exception:  # nor one room's the others'
                logger.exception("room_tick_failed", room=name)
        if events:
            self.deliver(self.to_outs(events))
        self._ticker = asyncio.get_running_loop().call_later(NACK_TICK_S, self._tick)

    def update_subscriptions(self, peer: Peer, p: MediaParticipant,
                             published: list[tuple[MediaParticipant, MediaTrack]]) -> bool:
        wanted: dict[str, tuple[MediaParticipant, MediaTrack]] = {}
        if p.permission.can_subscribe:
            wanted = {t.sid: (o, t) for o, t in published
                      if o is not p and t.sid not in p.unsubscribed}
        changed = False
        for sid in [s for s in peer.sub_tracks if s not in wanted]:
            del peer.sub_tracks[sid]
            changed = True
        taken = {t.mid for t in peer.sub_tracks.values()}
        for sid, (owner, track) in wanted.items():
            if sid in peer.sub_tracks:
                continue
            mid = None
            if peer.sub_state is not None:
                reusable = [m.mid for m in peer.sub_state.media
                            if m.kind == track.kind and m.track is None and m.mid not in taken]
                mid = reusable[0] if reusable else peer.sub_state.next_mid(taken)
            else:
                mid = next(str(n) for n in range(len(taken) + 1) if str(n) not in taken)
            taken.add(mid)
            codecs = self.track_codecs[sid]
            has_rtx = track.kind == "video" and any(c.rtx_payload_type is not None
                                                    for c in codecs)
            peer.sub_tracks[sid] = sdpmod.SubscriberTrack(
                mid=mid, kind=track.kind, stream_id=owner.sid, track_id=track.sid,
                ssrc=self.rng.getrandbits(32) or 1,
                rtx_ssrc=(self.rng.getrandbits(32) or 2) if has_rtx else None,
                codecs=codecs)
            changed = True
        return changed

    # -- data channels ---------------------------------------------------------------------
    def relay_data(self, sender: Peer, label: str, data: bytes | str) -> None:
        c = self.counters
        c.data_in += 1
        p = sender.participant
        if not p.permission.can_publish_data:
            c.drop("permission_denied")
            return
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.cfg.rtc.data_max_message_bytes:
            c.drop("too_large")
            return
        try:
            msg = json.loads(data)
            if not isinstance(msg, dict) or not isinstance(msg.get("payload"), str):
                raise ValueError("no payload")
            base64.b64decode(msg["payload"], validate=True)
            dests = msg.get("destination_identities") or []
            topic = msg.get("topic")
            if not isinstance(dests, list) or not all(isinstance(d, str) for d in dests):
                raise ValueError("bad destination_identities")
            if topic is not None and not isinstance(topic, str):
                raise ValueError("bad topic")
        except (ValueError, binascii.Error):
            c.drop("malformed")
            return
        body: dict[str, Any] = {"payload": msg["payload"], "kind": (
            "reliable" if label == "_reliable" else "lossy"),
            "from_identity": p.identity, "participant_sid": p.sid}
        if topic is not None:
            body["topic"] = topic
        text = json.dumps(body, separators=(",", ":"))
        wanted = set(dests)
        for o in sender.room_media.members.values():
            if o.session_id == p.session_id or (wanted and o.identity not in wanted):
                continue
            peer = sender.room_media.peers.get(o.session_id)
            if peer is not None and peer.send_data(label, text):
                c.data_out += 1
            else:
                c.drop("recipient_not_ready")
