"""The daemon as an operator sees it: CLI, health, readiness, metrics, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

from tests.conftest import ROOT, Daemon, start_daemon


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sfu", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=30, env=env)


@pytest.mark.timeout(30)
def test_health_and_ready(daemon: Daemon) -> None:
    assert daemon.get("/healthz") == (200, b'{"status": "ok"}')
    assert daemon.get("/readyz")[0] == 200


@pytest.mark.timeout(30)
def test_metrics_pass_promtool(daemon: Daemon) -> None:
    daemon.get("/healthz")
    status, body = daemon.get("/metrics", port=daemon.metrics_port)
    assert status == 200
    text = body.decode()
    for name in ("sfu_event_loop_lag_seconds", "sfu_http_requests_total",
                 "process_cpu_seconds_total", "sfu_participants", "sfu_rooms"):
        assert name in text
    assert 'route="/healthz"' in text
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.timeout(30)
def test_config_check_names_dotted_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rtc]\nudp_port = 80\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "rtc.udp_port: must be 1024..65535" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text((ROOT / "config.example.toml").read_text())
    env = {**__import__("os").environ, "SFU_API_SECRET": "e" * 40}
    assert run_cli("config", "check", str(good), env=env).returncode == 0
    missing_env = {k: v for k, v in env.items() if k != "SFU_API_SECRET"}
    result = run_cli("config", "check", str(good), env=missing_env)
    assert result.returncode == 2
    assert "auth.hmac_keys[0].secret_env: environment variable SFU_API_SECRET is not set" in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [[], ["serve"], ["config"], ["config", "check"], ["token"],
                                  ["token", "create"]])
def test_help_on_every_command(argv: list[str]) -> None:
    result = run_cli(*argv, "--help")
    assert result.returncode == 0
    assert "usage: sfu" in result.stdout


@pytest.mark.timeout(30)
def test_serve_without_config_runs_on_dev_defaults(tmp_path: Path) -> None:
    # Embedded defaults use fixed ports; skip if something else holds them.
    for port in (7880, 6789):
        if _port_busy(port):
            pytest.skip(f"port {port} busy")
    # from the temporary directory: the embedded default store is ./sfu-data/sfu.db
    proc = subprocess.Popen([sys.executable, "-m", "sfu", "serve"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        d = Daemon(proc, 7880, 6789, 7882, Path("-"), tmp_path / "none")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if d.get("/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        assert d.get("/readyz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        text = out.decode()
        assert "EMBEDDED DEVELOPMENT DEFAULTS" in text
        assert "devkey" in text
        assert (tmp_path / "sfu-data" / "sfu.db").is_file()  # the embedded store
    finally:
        if proc.poll() is None:
            proc.kill()


def _port_busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def next_of(ws: websockets.ClientConnection, mtype: str, timeout_s: float) -> dict:
    """The next message of ``mtype`` (the subscriber offer and trickles come after join)."""
    deadline = time.monotonic() + timeout_s
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if msg["type"] == mtype:
            return msg  # type: ignore[no-any-return]


@pytest.mark.timeout(40)
async def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    drain_timeout_s = 3.0
    d = await asyncio.to_thread(start_daemon, tmp_path,
                                {"server": {"drain_timeout_s": drain_timeout_s}})
    try:
        async with websockets.connect(f"{d.ws}?access_token={d.token('alice')}") as alice:
            join = json.loads(await asyncio.wait_for(alice.recv(), 5))
            assert join["type"] == "join"
            assert d.get("/readyz")[0] == 200

            sent_at = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            # /readyz turns 503 at once
            status = 200
            while time.monotonic() - sent_at < 1.0:
                status = (await asyncio.to_thread(d.get, "/readyz"))[0]
                if status == 503:
                    break
            assert status == 503
            # new joins are refused while draining
            async with websockets.connect(f"{d.ws}?access_token={d.token('bob')}") as bob:
                refused = json.loads(await asyncio.wait_for(bob.recv(), 5))
                assert refused["type"] == "error" and refused["code"] == "server_draining"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(bob.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
            # the existing session keeps working during the drain ...
            await alice.send(json.dumps({"type": "ping", "id": 1}))
            assert (await next_of(alice, "pong", 5))["id"] == 1
            # ... and is told to leave when the drain timeout runs out
            leave = await next_of(alice, "leave", drain_timeout_s + 2)
            assert leave["type"] == "leave" and leave["reason"] == "server_shutdown"
            assert time.monotonic() - sent_at >= drain_timeout_s - 0.5
        rc = await asyncio.to_thread(d.proc.wait, drain_timeout_s + 2)
        assert rc == 0
        assert time.monotonic() - sent_at <= drain_timeout_s + 2
    finally:
        if d.proc.poll() is None:
            d.proc.kill()


@pytest.mark.timeout(30)
def test_sigterm_without_sessions_exits_at_once(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, {"server": {"drain_timeout_s": 20.0}})
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    assert time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_second_sigint_exits_at_once(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, {"server": {"drain_timeout_s": 60.0}})
    import websockets.sync.client as wsc

    with wsc.connect(f"{d.ws}?access_token={d.token('carol')}") as c:
        assert json.loads(c.recv(timeout=5))["type"] == "join"
        d.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert d.proc.poll() is None  # draining, waiting for carol
        d.proc.send_signal(signal.SIGINT)
        assert d.proc.wait(5) == 130


@pytest.mark.timeout(30)
def test_token_create_prints_a_verifiable_jwt(tmp_path: Path) -> None:
    from signaling.auth import TokenVerifier
    from tests.conftest import API_KEY, API_SECRET, write_config

    path, _ = write_config(tmp_path)
    result = run_cli("token", "create", "--config", str(path), "--room", "r1",
                     "--identity", "ann", "--name", "Ann", "--ttl", "30m", "--no-publish",
                     "--hidden")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert API_SECRET not in result.stdout + result.stderr
    claims = TokenVerifier({API_KEY: API_SECRET}).verify(token, time.time())
    assert claims.identity == "ann" and claims.name == "Ann"
    assert claims.grant.room == "r1" and claims.grant.room_join
    assert not claims.grant.can_publish and claims.grant.hidden
    assert 1790 <= claims.expires_at - time.time() <= 1800
    admin = run_cli("token", "create", "--config", str(path), "--identity", "ops", "--admin",
                    "--no-join")
    grant = TokenVerifier({API_KEY: API_SECRET}).verify(admin.stdout.strip(), time.time()).grant
    assert grant.room_admin and grant.room_create and grant.room_list and not grant.room_join
    bad = run_cli("token", "create", "--config", str(path), "--identity", "x", "--room", "r",
                  "--ttl", "soon")
    assert bad.returncode == 2 and "invalid ttl" in bad.stderr


def test_grafana_dashboard_uses_only_metrics_the_daemon_exports(daemon: Daemon) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    status, body = daemon.get("/metrics", port=daemon.metrics_port)
    assert status == 200
    families = set(re.findall(r"^# TYPE (\S+) ", body.decode(), re.M))
    exposed = set(families)
    for name in families:  # counters and histograms are queried by their sample names
        exposed |= {f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    used = {m for p in dashboard["panels"] for t in p["targets"]
            for m in re.findall(r"\b((?:sfu|process)_[a-z_]+)", t["expr"])}
    assert used, "the dashboard queries nothing"
    assert not used - exposed, f"the dashboard queries unknown metrics: {used - exposed}"
