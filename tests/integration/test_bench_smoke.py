"""Smoke test of the load harness: ``bench forward`` against a daemon this test starts.

The harness runs in its own process (tests never import ``bench``). It must connect its
publisher and subscribers (signaling, ICE, DTLS on every transport) and report the fields
the benchmark runs rely on. Nothing here asserts speed. Media is required only when the
daemon says it forwards (``sfu_forwarded_packets_total`` in /metrics).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
