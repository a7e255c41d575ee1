"""Every Prometheus metric the daemon exports, defined in this one module.

Names carry the ``sfu_`` prefix and their unit; labels are bounded (kind, direction, layer,
reason, code, method, route, status) — never room or participant ids. Pure cores never import
this module: shells read the cores' counters and update these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

build_info = Gauge("sfu_build_info", "Build information.", ["version"], registry=REGISTRY)
up_since = Gauge("sfu_start_time_seconds", "Unix time the daemon started.", registry=REGISTRY)
draining = Gauge("sfu_draining", "1 while the daemon drains after SIGTERM.", registry=REGISTRY)

event_loop_lag = Histogram(
    "sfu_event_loop_lag_seconds",
    "How late the event loop ran a timer scheduled to fire on time.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
event_loop_lag_max = Gauge(
    "sfu_event_loop_lag_max_seconds", "Largest event loop lag in the last sample window.",
    registry=REGISTRY,
)

http_requests = Counter(
    "sfu_http_requests_total", "HTTP requests served.", ["route", "method", "status"],
    registry=REGISTRY,
)
http_request_duration = Histogram(
    "sfu_http_request_duration_seconds", "HTTP request handling time.", ["route", "method"],
    registry=REGISTRY,
)
api_errors = Counter(
    "sfu_api_errors_total", "REST API requests refused or failed, by error code.", ["code"],
    registry=REGISTRY,
)

# Signaling
rooms = Gauge("sfu_rooms", "Rooms open on this node.", registry=REGISTRY)
participants = Gauge("sfu_participants", "Participants in rooms on this node.", registry=REGISTRY)
signaling_connections = Gauge(
    "sfu_signaling_connections", "Open signaling WebSocket connections.", registry=REGISTRY)
signaling_messages = Counter(
    "sfu_signaling_messages_total", "Signaling messages by direction.", ["direction"],
    registry=REGISTRY,
)
signaling_errors = Counter(
    "sfu_signaling_errors_total", "Signaling errors sent or connections refused, by code.",
    ["code"], registry=REGISTRY,
)
join_latency = Histogram(
    "sfu_join_latency_seconds", "Time from WebSocket accept to the join message sent.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
connection_quality = Histogram(
    "sfu_connection_quality_score",
    "Participants' connection quality scores (E-model MOS, 1..4.5), one per scoring.",
    buckets=(1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.25, 4.5),
    registry=REGISTRY,
)
speaker_updates = Counter(
    "sfu_speakers_changed_total", "speakers_changed messages computed (one per room update).",
    registry=REGISTRY,
)
# Link figures from RTCP receiver reports, one observation per report block:
# direction "up" = what the SFU receives from publishers (its own RRs), "down" = what
# subscribers report about the SFU's streams to them.
packet_loss = Histogram(
    "sfu_packet_loss_ratio", "Fraction of packets lost per receiver-report interval.",
    ["direction"], buckets=(0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    registry=REGISTRY,
)
jitter = Histogram(
    "sfu_jitter_seconds", "Interarrival jitter from receiver reports.", ["direction"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32), registry=REGISTRY,
)
rtt = Histogram(
    "sfu_rtt_seconds", "Round-trip time to subscribers (their RRs answering our SRs).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6),
    registry=REGISTRY,
)
sessions_resumed = Counter(
    "sfu_sessions_resumed_total", "Signaling sessions resumed after a dropped WebSocket.",
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)


class MediaCollector:
    """Counters kept as plain ints by the media path, read only when /metrics is scraped.

    The per-packet path never touches a Prometheus object: it bumps ints on its own objects
    and this collector turns them into metric families at scrape time.
    """

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any]] | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.source() if self.source is not None else {}

        def counter(name: str, doc: str, labels: list[str] | None = None,
                    values: dict[tuple[str, ...], float] | float | None = None
                    ) -> CounterMetricFamily:
            fam = CounterMetricFamily(name, doc, labels=labels)
            if isinstance(values, dict):
                for key, v in values.items():
                    fam.add_metric(list(key), v)
            elif values is not None:
                fam.add_metric([], values)
            return fam

        yield counter("sfu_udp_datagrams", "Datagrams on the media UDP port.", ["direction"],
                      {("in",): snap.get("datagrams_in", 0), ("out",): snap.get("datagrams_out", 0)})
        yield counter("sfu_udp_bytes", "Bytes on the media UDP port.", ["direction"],
                      {("in",): snap.get("bytes_in", 0), ("out",): snap.get("bytes_out", 0)})
        yield counter("sfu_udp_dropped_datagrams", "Datagrams dropped on the media port, by reason.",
                      ["reason"], {(r,): v for r, v in snap.get("drops", {}).items()})
        yield counter("sfu_udp_kernel_rx_drops",
                      "Datagrams the kernel dropped because the receive buffer was full.",
                      None, snap.get("kernel_rx_drops", 0))
        yield counter("sfu_ice_restarts", "ICE restarts of publisher transports.", None,
                      snap.get("ice_restarts", 0))
        yield counter("sfu_dtls_failures", "Transports whose DTLS handshake failed.", None,
                      snap.get("dtls_failures", 0))
        yield counter("sfu_subscriber_offers", "Offers sent on subscriber transports.", None,
                      snap.get("subscriber_offers", 0))
        yield counter("sfu_data_messages", "Data channel messages relayed.", ["direction"],
                      {("in",): snap.get("data_in", 0), ("out",): snap.get("data_out", 0)})
        yield counter("sfu_data_messages_dropped", "Data channel messages dropped, by reason.",
                      ["reason"], {(r,): v for r, v in snap.get("data_dropped", {}).items()})
        yield counter("sfu_publisher_rtp_packets", "RTP packets received from publishers.",
                      None, snap.get("rtp_in", 0))
        yield counter("sfu_rtcp_feedback_packets", "RTCP feedback packets sent to publishers.",
                      ["kind"], {(k,): v for k, v in snap.get("feedback", {}).items()})
        fwd = snap.get("forward", {})
        yield counter("sfu_forwarded_packets", "RTP packets forwarded to subscribers.", None,
                      fwd.get("forwarded", 0))
        yield counter("sfu_forward_dropped_packets",
                      "Publisher packets not forwarded on purpose or refused, by reason.",
                      ["reason"], {("padding",): fwd.get("dropped_padding", 0),
                                   ("waiting_keyframe",): fwd.get("waiting_keyframe", 0),
                                   ("unknown_ssrc",): fwd.get("unknown_ssrc", 0),
                                   ("malformed_rtcp",): fwd.get("malformed_rtcp", 0),
                                   ("malformed_vp8",): fwd.get("malformed_vp8", 0),
                                   ("temporal_layer",): fwd.get("dropped_temporal", 0),
                                   ("muted",): fwd.get("dropped_muted", 0),
                                   ("rtx_duplicate",): fwd.get("rtx_duplicates", 0),
                                   ("malformed",): snap.get("malformed_publisher_packets", 0)})
        yield counter("sfu_nacks", "NACK packets, received from subscribers (in) or sent to "
                      "publishers (out).", ["direction"],
                      {("in",): fwd.get("nacks_in", 0), ("out",): fwd.get("nacks_out", 0)})
        yield counter("sfu_retransmitted_packets", "Packets retransmitted to subscribers.",
                      None, fwd.get("retransmitted", 0))
        yield counter("sfu_upstream_rtx_packets", "RTX packets received from publishers.",
                      None, fwd.get("rtx_upstream", 0))
        yield counter("sfu_keyframe_requests", "PLIs received from subscribers (in) and sent "
                      "to publishers (out).", ["direction"],
                      {("in",): fwd.get("pli_in", 0), ("out",): fwd.get("pli_out", 0)})
        yield counter("sfu_sender_reports", "Sender Reports sent to subscribers.", None,
                      fwd.get("sr_out", 0))
        yield counter("sfu_layer_switches", "Simulcast layer switches of down-tracks.", None,
                      fwd.get("layer_switches", 0))
        yield counter("sfu_stream_pauses", "Down-tracks paused by the bandwidth allocator.",
                      None, fwd.get("stream_pauses", 0))
        yield counter("sfu_probe_packets", "Bandwidth probe padding packets sent.", None,
                      fwd.get("probe_packets", 0))
        layer_bps = GaugeMetricFamily(
            "sfu_layer_bitrate_bps", "Incoming media bitrate summed over published tracks, "
            "by kind and spatial layer (0 = lowest).", labels=["kind", "layer"])
        for (kind, layer), bps in sorted(snap.get("layer_bitrates", {}).items()):
            layer_bps.add_metric([kind, str(layer)], bps)
        yield layer_bps
        tracks = GaugeMetricFamily("sfu_tracks", "Published tracks and subscriptions "
                                   "(down-tracks) on this node.", labels=["direction"])
        tracks.add_metric(["published"], snap.get("tracks_published", 0))
        tracks.add_metric(["subscribed"], snap.get("tracks_subscribed", 0))
        yield tracks


media_collector = MediaCollector()
REGISTRY.register(media_collector)  # type: ignore[arg-type]


class TurnCollector:
    """The embedded TURN relay's counters, read at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any]] | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.source() if self.source is not None else {}

        def fam(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str,
                label: str | None, values: Any) -> Metric:
            f = kind(name, doc, labels=[label] if label else None)
            if isinstance(values, dict):
                for k, v in values.items():
                    f.add_metric([str(k)], v)
            else:
                f.add_metric([], values or 0)
            return f

        yield fam(GaugeMetricFamily, "sfu_turn_allocations", "TURN allocations open.", None,
                  snap.get("allocations_active", 0))
        yield fam(CounterMetricFamily, "sfu_turn_allocations_created",
                  "TURN allocations created.", None, snap.get("allocations_created", 0))
        yield fam(CounterMetricFamily, "sfu_turn_allocations_deleted",
                  "TURN allocations ended, by reason.", "reason",
                  snap.get("allocations_deleted", {}))
        yield fam(CounterMetricFamily, "sfu_turn_relayed_packets", "Packets relayed by TURN.",
                  "direction", {"to_peer": snap.get("packets_to_peer", 0),
                                "from_peer": snap.get("packets_from_peer", 0)})
        yield fam(CounterMetricFamily, "sfu_turn_relayed_bytes", "Bytes relayed by TURN.",
                  "direction", {"to_peer": snap.get("bytes_to_peer", 0),
                                "from_peer": snap.get("bytes_from_peer", 0)})
        yield fam(CounterMetricFamily, "sfu_turn_auth_failures",
                  "TURN requests refused for bad credentials.", None,
                  snap.get("auth_failures", 0))
        yield fam(CounterMetricFamily, "sfu_turn_denied",
                  "TURN relaying refused by the peer policy or quotas, by reason.", "reason",
                  snap.get("denied", {}))
        yield fam(CounterMetricFamily, "sfu_turn_dropped", "TURN input dropped, by reason.",
                  "reason", snap.get("dropped", {}))
        yield fam(CounterMetricFamily, "sfu_turn_error_responses",
                  "TURN error responses, by code.", "code", snap.get("errors", {}))


turn_collector = TurnCollector()
REGISTRY.register(turn_collector)  # type: ignore[arg-type]

# Webhooks and the store
webhook_attempts = Counter(
    "sfu_webhook_attempts_total",
    "Webhook POSTs, by outcome: 2xx/3xx/4xx/5xx (status class), timeout, connection.",
    ["code"], registry=REGISTRY,
)
webhook_deliveries = Counter(
    "sfu_webhook_deliveries_total",
    "Webhook attempts by what followed: delivered, retry (backing off), failed (given up).",
    ["reason"], registry=REGISTRY,
)
webhook_delivery_latency = Histogram(
    "sfu_webhook_delivery_latency_seconds",
    "From the event (or its replay) to its endpoint's 2xx answer.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 86400),
    registry=REGISTRY,
)
webhook_pending_heads = Gauge(
    "sfu_webhook_pending_heads",
    "Endpoint and room pairs with a webhook waiting to be delivered (at the last scan).",
    registry=REGISTRY,
)
store_checkpoints = Counter(
    "sfu_store_checkpoints_total", "Checkpoints of open sessions written to the store.",
    registry=REGISTRY,
)
store_errors = Counter(
    "sfu_store_errors_total", "Store writes that failed, by reason.", ["reason"],
    registry=REGISTRY,
)
