"""The sweep's stepping, stopping rule, capacity file and plot (runs replaced by a model of
a server that loses packets past a load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.forward import ForwardOptions
from bench.sweep import run_sweep, steps


def model(opts: ForwardOptions) -> tuple[dict[str, Any], int]:
    n = opts.subscribers
    return {"subscribers": n, "forwarded_pps": 150.0 * n, "forwarded_bps": 600_000 * n,
            "us_per_forwarded_packet": 40.0, "server_cpu_pct": min(100.0, 0.6 * n),
            "loss_pct": 0.0 if n < 80 else 3.5, "delay_ms": {"p50": 2.0, "p99": 9.0},
            "valid": True, "invalid_reasons": [], "connected": {"subscribers": n},
            "errors": []}, 0


def test_steps_grow_by_half_up_to_the_maximum() -> None:
    assert steps(10, 40) == [10, 15, 22, 33, 40]
    assert steps(1, 3) == [1, 2, 3]


def test_sweep_stops_at_the_first_lossy_step_and_records_capacity(tmp_path: Path) -> None:
    png = tmp_path / "sweep.png"
    capacity = tmp_path / "capacity.json"
    capacity.write_text(json.dumps({"forward": {"capacity_subscribers": 5}}))
    report, rc = run_sweep(ForwardOptions(subscribers=25, simulcast=True), maximum=600,
                           png=str(png), capacity_json=str(capacity), run=model)
    assert rc == 0
    assert [p["subscribers"] for p in report["points"]] == [25, 38, 57, 86]
    assert report["capacity_subscribers"] == 57
    assert report["stopped_by"]["loss_pct"] == 3.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(capacity.read_text())
    assert saved["forward"] == {"capacity_subscribers": 5}  # other modes are kept
    assert saved["livestream"]["capacity_subscribers"] == 57
