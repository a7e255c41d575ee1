"""Every Prometheus metric the daemon exports, defined in this one module.

Names carry the ``sfu_`` prefix and their unit; labels are bounded (kind, direction, layer,
reason, code, method, route, status) — never room or participant ids. Pure cores never import
this module: shells read the cores' counters and update these.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

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
sessions_resumed = Counter(
    "sfu_sessions_resumed_total", "Signaling sessions resumed after a dropped WebSocket.",
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
