"""A daemon for a bench run: ``python -m sfu serve`` on free loopback ports, with a generated
API secret file, optionally pinned to one CPU with ``taskset``."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .transport import BenchError

__all__ = ["LocalDaemon", "child_env", "start_daemon"]

API_KEY = "APIbench"
ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment for child processes: this checkout first on ``PYTHONPATH``, so
    ``sfu`` and ``bench`` import without an install, from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LocalDaemon:
    proc: subprocess.Popen[bytes]
    http_port: int
    metrics_port: int
    udp_port: int
    api_key: str
    api_secret: str
    log_path: Path
    pinned_cpu: int | None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/rtc"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(workdir: Path, *, cpu: int | None, log_level: str = "warning",
                 timeout_s: float = 20.0) -> LocalDaemon:
    """Write a config into ``workdir`` and start the daemon; waits for ``/healthz``."""
    http_port = _free_port(socket.SOCK_STREAM)
    metrics_port = _free_port(socket.SOCK_STREAM)
    udp_port = _free_port(socket.SOCK_DGRAM)
    secret = secrets.token_urlsafe(36)
    secret_file = workdir / "api_secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    config = workdir / "sfu.toml"
    config.write_text("\n".join([
        "[server]", f"http_port = {http_port}", "drain_timeout_s = 2.0",
        "[metrics]", f"port = {metrics_port}",
        "[rtc]", f"udp_port = {udp_port}",
        "[logging]", 'format = "json"', f'level = "{log_level}"',
        "[store]", f'path = "{workdir / "sfu.db"}"',
        "[[auth.hmac_keys]]", f'key = "{API_KEY}"', f'secret_file = "{secret_file}"',
    ]) + "\n")
    command = [sys.executable, "-m", "sfu", "serve", "--config", str(config)]
    pinned = None
    taskset = shutil.which("taskset")
    if cpu is not None and taskset is not None:
        command = [taskset, "-c", str(cpu), *command]  # taskset execs: same pid
        pinned = cpu
    log_path = workdir / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env())
    daemon = LocalDaemon(proc, http_port, metrics_port, udp_port, API_KEY, secret, log_path,
                         pinned)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the daemon exited with {proc.returncode}:\n{daemon.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return daemon
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    daemon.stop()
    raise BenchError(f"the daemon did not answer /healthz in {timeout_s} s:\n{daemon.log_tail()}")
