"""Shared fixtures: a real daemon subprocess on free loopback ports, and token minting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from signaling.auth import VideoGrant, mint_token

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "APItest"
API_SECRET = "t" * 48


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    http_port: int
    metrics_port: int
    udp_port: int
    config_path: Path
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/rtc"

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{port or self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def token(self, identity: str, room: str = "room1", *, ttl_s: float = 3600,
              now: float | None = None, **grant: Any) -> str:
        g = VideoGrant(**{"room_join": True, "room": room, **grant})
        return mint_token(API_KEY, API_SECRET, identity=identity,
                          now=time.time() if now is None else now, ttl_s=ttl_s, grant=g)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_config(tmp: Path, sections: dict[str, dict[str, Any]] | None = None,
                 extra_toml: str = "") -> tuple[Path, dict[str, int]]:
    """The config file for a test daemon: ``sections`` are flat tables merged into the
    defaults; ``extra_toml`` is appended as is (arrays of tables such as
    ``[[webhooks.endpoints]]``)."""
    ports = {"http": free_port(), "metrics": free_port(), "udp": free_port(socket.SOCK_DGRAM)}
    secret_file = tmp / "api_secret"
    secret_file.write_text(API_SECRET)
    secret_file.chmod(0o600)
    base: dict[str, dict[str, Any]] = {
        "server": {"http_port": ports["http"], "drain_timeout_s": 5.0},
        "metrics": {"port": ports["metrics"]},
        "rtc": {"udp_port": ports["udp"]},
        "logging": {"format": "json", "level": "info"},
        "store": {"path": str(tmp / "sfu.db")},
    }
    for name, values in (sections or {}).items():
        base.setdefault(name, {}).update(values)

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        return str(v)

    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {fmt(v)}" for k, v in values.items()]
    lines += ["[[auth.hmac_keys]]", f'key = "{API_KEY}"', f'secret_file = "{secret_file}"']
    path = tmp / "sfu.toml"
    path.write_text("\n".join(lines) + "\n" + (extra_toml.rstrip("\n") + "\n" if extra_toml else ""))
    return path, ports


def start_daemon(tmp: Path, sections: dict[str, dict[str, Any]] | None = None,
                 timeout_s: float = 15, extra_toml: str = "") -> Daemon:
    path, ports = write_config(tmp, sections, extra_toml)
    log_path = tmp / "daemon.log"
    logf = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "sfu", "serve", "--config", str(path)],
                            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
    d = Daemon(proc, ports["http"], ports["metrics"], ports["udp"], path, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}:\n{d.log()}")
        try:
            if d.get("/healthz")[0] == 200:
                return d
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"daemon did not start:\n{d.log()}")


def stop_daemon(d: Daemon) -> None:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(10)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp_path)
    yield d
    stop_daemon(d)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(sections: dict[str, dict[str, Any]] | None = None, extra_toml: str = "") -> Daemon:
        sub = tmp_path / f"d{len(started)}"
        sub.mkdir()
        d = start_daemon(sub, sections, extra_toml=extra_toml)
        started.append(d)
        return d

    yield make
    for d in started:
        stop_daemon(d)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
