"""Smoke test of the load harness: ``bench forward``, ``audio`` (against a daemon this test
starts), ``livestream`` and ``meeting`` (each with the daemon the bench starts).

The harness runs in its own process (tests never import ``bench``). It must connect its
publishers and subscribers (signaling, ICE, DTLS on every transport), deliver every stream
each subscriber expects, and report the fields the benchmark runs rely on, in total and per
room. Nothing here asserts speed. In ``forward``, media is required only when the daemon
says it forwards (``sfu_forwarded_packets_total`` in /metrics).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEY, API_SECRET, ROOT, Daemon

RUN_BENCH = "import sys; from bench.cli import main; raise SystemExit(main(sys.argv[1:]))"
FIELDS = ("forwarded_packets", "forwarded_pps", "us_per_forwarded_packet", "loss_pct",
          "server_cpu_s", "subscribers", "duration_s", "bench_cpu_s", "bench_cpu_pct", "valid",
          "delay_ms", "connected", "publisher", "decode", "errors")


@pytest.mark.timeout(120)
def test_bench_forward_connects_every_client_and_reports(daemon: Daemon, tmp_path: Path) -> None:
    secret_file = tmp_path / "bench_api_secret"
    secret_file.write_text(API_SECRET)
    secret_file.chmod(0o600)
    metrics_url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    proc = subprocess.run(
        [sys.executable, "-c", RUN_BENCH, "forward", "--subscribers", "2", "--duration", "3",
         "--warmup", "1", "--media-timeout", "8", "--json", "--no-pin",
         "--url", daemon.ws, "--api-key", API_KEY, "--api-secret-file", str(secret_file),
         "--metrics-url", metrics_url, "--server-pid", str(daemon.proc.pid)],
        capture_output=True, cwd=ROOT, timeout=100)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    report = json.loads(proc.stdout)

    for name in FIELDS:
        assert name in report, name
    assert report["mode"] == "forward"
    assert report["subscribers"] == 2
    assert report["duration_s"] == pytest.approx(3, abs=0.5)
    assert report["connected"]["publisher"] is True
    assert report["connected"]["subscribers"] == 2
    assert report["publisher"]["packets_sent"] > 0
    assert report["server_cpu_s"] is not None
    assert report["errors"] == []

    status, body = daemon.get("/metrics", port=daemon.metrics_port)
    assert status == 200
    if "sfu_forwarded_packets_total" in body.decode():
        assert report["forwarded_packets"] > 0
        assert report["connected"]["subscribers_with_media"] == 2
        assert report["us_per_forwarded_packet"] is not None
        assert report["decode"]["frames"] > 0
        assert report["decode"]["errors"] == 0
    assert daemon.proc.poll() is None


@pytest.mark.timeout(150)
def test_bench_livestream_starts_its_daemon_and_measures_layer_switches() -> None:
    # `sfu bench livestream` as the issue runs it (own daemon), shortened: a harness check
    proc = subprocess.run(
        [sys.executable, "-c", RUN_BENCH, "livestream", "--subscribers", "3", "--duration", "2",
         "--warmup", "1", "--switches", "2", "--json", "--no-pin"],
        capture_output=True, cwd=ROOT, timeout=140)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    report = json.loads(proc.stdout)
    for name in FIELDS:
        assert name in report, name
    assert report["mode"] == "livestream"
    assert report["server"]["started_by_bench"] is True
    assert report["connected"]["subscribers_with_media"] == 3
    assert report["forwarded_packets"] > 0
    assert report["subscribers_per_layer"] == {"low": 1, "medium": 1, "high": 1}
    assert report["layer_switches_measured"] == 6  # 3 decoding subscribers x 2 switches
    assert report["layer_switch_ms"]["samples"] == 6
    assert report["decode"]["errors"] == 0
    assert report["errors"] == []
    memory = report["daemon_memory"]  # the daemon's RSS/PSS over the window (the soak's record)
    assert memory["pss_kb"]["first"] > 0
    assert memory["rss_kb"]["first"] >= memory["pss_kb"]["first"]
    assert len(memory["samples"]) >= 2


def _run_bench(*argv: str, timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", RUN_BENCH, *argv, "--json", "--no-pin"],
                          capture_output=True, cwd=ROOT, timeout=timeout_s)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    for name in (*FIELDS, "loss_pct_by_kind", "raw_loss_pct", "join_to_connected_ms",
                 "join_to_first_media_ms", "per_room", "invalid_reasons", "daemon_memory"):
        assert name in report, name
    return report


def _assert_rooms_sum_to_totals(report: dict[str, Any]) -> None:
    rooms = report["per_room"]
    assert len(rooms) == report["rooms"]
    assert len({r["room"] for r in rooms}) == len(rooms)
    for name in ("forwarded_packets", "forwarded_bytes", "retransmissions_received"):
        assert sum(r[name] for r in rooms) == report[name], name
    for name in ("publishers", "subscribers"):
        assert sum(r[name] for r in rooms) == report[name], name
    for name in ("subscribers_with_media", "streams_expected", "streams_received"):
        assert sum(r[name] for r in rooms) == report["connected"][name], name
    for room in rooms:
        assert room["forwarded_packets"] > 0
        assert room["loss_pct"] is not None


@pytest.mark.timeout(150)
def test_bench_audio_in_two_rooms_delivers_every_publisher_to_every_subscriber(
        daemon: Daemon, tmp_path: Path) -> None:
    # the options forward has for a running daemon, on another scenario
    secret_file = tmp_path / "bench_api_secret"
    secret_file.write_text(API_SECRET)
    secret_file.chmod(0o600)
    report = _run_bench(
        "audio", "--publishers", "3", "--subscribers", "2", "--rooms", "2", "--duration", "3",
        "--warmup", "1", "--media-timeout", "15",
        "--url", daemon.ws, "--api-key", API_KEY, "--api-secret-file", str(secret_file),
        "--metrics-url", f"http://127.0.0.1:{daemon.metrics_port}/metrics",
        "--server-pid", str(daemon.proc.pid), timeout_s=140)
    assert report["mode"] == "audio"
    assert report["rooms"] == 2
    assert report["publishers"] == 6
    assert report["subscribers"] == 4
    connected = report["connected"]
    assert connected["publisher"] is True
    assert connected["publishers"] == 6
    assert connected["subscribers"] == 4
    # each subscriber received a stream from each of the 3 publishers of its room
    assert connected["subscribers_with_media"] == 4
    assert connected["streams_expected"] == connected["streams_received"] == 4 * 3
    assert report["forwarded_packets"] > 0
    assert report["loss_pct"] is not None
    assert report["loss_pct_by_kind"]["audio"] is not None
    assert report["loss_pct_by_kind"]["video"] is None  # audio only
    assert report["publisher"]["count"] == 6
    assert report["publisher"]["video_packets"] == 0
    assert report["join_to_connected_ms"]["samples"] == 10  # 6 publishers + 4 subscribers
    assert report["join_to_first_media_ms"]["samples"] == 4
    assert report["server_cpu_s"] is not None
    assert report["errors"] == []
    _assert_rooms_sum_to_totals(report)
    assert daemon.proc.poll() is None


@pytest.mark.timeout(150)
def test_bench_meeting_everyone_receives_everyone_else() -> None:
    report = _run_bench("meeting", "--participants", "3", "--duration", "3", "--warmup", "1",
                        "--media-timeout", "15", timeout_s=140)
    assert report["mode"] == "meeting"
    assert report["server"]["started_by_bench"] is True
    assert report["participants"] == report["publishers"] == report["subscribers"] == 3
    connected = report["connected"]
    assert connected["publishers"] == connected["subscribers"] == 3
    # 3 participants x (audio + video) of the 2 others
    assert connected["streams_expected"] == connected["streams_received"] == 3 * 2 * 2
    assert connected["subscribers_with_media"] == 3
    assert report["forwarded_packets"] > 0
    assert report["loss_pct_by_kind"]["audio"] is not None
    assert report["loss_pct_by_kind"]["video"] is not None
    assert report["join_to_connected_ms"]["samples"] == 3
    assert report["join_to_first_media_ms"]["samples"] == 3
    assert report["decode"]["frames"] > 0
    assert report["decode"]["errors"] == 0
    assert report["errors"] == []
    _assert_rooms_sum_to_totals(report)


@pytest.mark.timeout(150)
def test_bench_livestream_over_two_worker_processes_and_two_rooms() -> None:
    report = _run_bench("livestream", "--subscribers", "3", "--rooms", "2", "--processes", "2",
                        "--duration", "2", "--warmup", "1", "--switches", "1",
                        "--media-timeout", "15", timeout_s=140)
    assert report["mode"] == "livestream"
    assert len(report["bench_processes"]) == 2  # one entry per worker process
    assert report["publishers"] == 2
    assert report["subscribers"] == 6
    assert report["connected"]["subscribers"] == 6
    assert report["connected"]["subscribers_with_media"] == 6
    assert report["subscribers_per_layer"] == {"low": 2, "medium": 2, "high": 2}
    assert report["layer_switches_measured"] == 6  # 2 rooms x 3 decoding subscribers x 1
    assert report["decode"]["errors"] == 0
    assert report["errors"] == []
    _assert_rooms_sum_to_totals(report)
