"""Composition root: wires the packages together and owns every task of the daemon.

Shutdown: the first SIGTERM or SIGINT starts a drain — ``/readyz`` answers 503 at once, new
joins are refused, existing sessions get up to ``server.drain_timeout_s`` to leave on their
own and are then sent ``leave`` with reason ``server_shutdown``; the process exits 0.
A second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import signal
import time
from pathlib import Path

from aiohttp import web

import sfu
from sfu import log, metrics
from sfu.api import ApiServer
from sfu.config import Config
from sfu.httpserver import make_http_app, make_metrics_app
from sfu.media import MediaNode
from sfu.rooms import Out, RoomService
from sfu.rtc_server import SignalServer
from sfu.store.service import StoreService
from signaling.auth import TokenVerifier
from turn.shell import TurnService

logger = log.get("sfu.app")

HTTP_MAX_LINE_BYTES = 32 * 1024
#: How long a clean shutdown waits for due webhooks (room_finished…) to be delivered.
WEBHOOK_FLUSH_S = 3.0


def own_http_url(cfg: Config) -> str:
    """This daemon's HTTP address as a URL (loopback when it listens on every address)."""
    host = cfg.server.http_host
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{shown}:{cfg.server.http_port}"


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._stop = asyncio.Event()
        self._sigint_count = 0
        secrets = cfg.api_secrets()
        public_keys = {pk.kid: (pk.alg, Path(pk.pem_file).read_bytes())
                       for pk in cfg.auth.public_keys}
        self.verifier = TokenVerifier(secrets, public_keys, leeway_s=cfg.auth.leeway_s)
        self.store = StoreService(cfg)
        self.rooms = RoomService(
            auto_create=cfg.room.auto_create, max_participants=cfg.room.max_participants,
            empty_timeout_s=cfg.room.empty_timeout_s,
            resume_window_s=cfg.signaling.resume_window_s, rng=random.SystemRandom(),
            on_event=self.store.on_event)
        self.media = MediaNode(cfg, self.rooms, self._deliver)
        self.store.usage = self.media.session_usage
        self.store.all_usage = self.media.all_usage
        metrics.media_collector.source = self.media.snapshot
        self.turn: TurnService | None = None
        if cfg.turn.enabled:
            # the embedded relay always lets relayed clients reach our own media port, even
            # when that address is private (else relay-only users fail behind node_ip)
            rtc = cfg.rtc
            media_ip = rtc.node_ip or (rtc.bind_host if rtc.bind_host not in ("0.0.0.0", "::")
                                       else "127.0.0.1")
            self.turn = TurnService(cfg.turn, always_allow=[(media_ip, rtc.udp_port)])
            turn = self.turn
            metrics.turn_collector.source = lambda: turn.stats
        self.signal = SignalServer(cfg, verifier=self.verifier, rooms=self.rooms,
                                   api_secrets=secrets, media=self.media,
                                   ice_servers=self.turn.ice_servers if self.turn else None)
        self.api = ApiServer(cfg.api, verifier=self.verifier, rooms=self.rooms,
                             deliver=self._deliver, minting_keys=secrets,
                             join_base_url=cfg.api.join_base_url or own_http_url(cfg),
                             participant_media=self.media.participant_media,
                             store=self.store.writer)
        self.draining = False

    def _deliver(self, outs: list[Out]) -> None:
        self.signal.deliver(outs)

    def is_ready(self) -> bool:
        return not self.draining

    def request_stop(self, signame: str) -> None:
        if signame == "SIGINT":
            self._sigint_count += 1
            if self._sigint_count >= 2:
                logger.warning("second_sigint_exit_now")
                os._exit(130)
        if not self.draining:
            logger.info("drain_started", signal=signame,
                        drain_timeout_s=self.cfg.server.drain_timeout_s)
        self.draining = True
        metrics.draining.set(1)
        self.signal.begin_drain()
        self._stop.set()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        metrics.build_info.labels(sfu.__version__).set(1)
        metrics.up_since.set(time.time())

        http_app = make_http_app(is_ready=self.is_ready)
        self.signal.mount(http_app)
        self.api.mount(http_app)
        runners: list[web.AppRunner] = []
        self.store.open()  # migrations and crash recovery, before anyone can join
        await self.media.start()
        if self.turn is not None:
            await self.turn.start()
        try:
            runners.append(await self._start(http_app, self.cfg.server.http_host,
                                             self.cfg.server.http_port))
            if self.cfg.metrics.enabled:
                runners.append(await self._start(make_metrics_app(), self.cfg.metrics.host,
                                                 self.cfg.metrics.port))
            logger.info("server_started", version=sfu.__version__,
                        http=f"{self.cfg.server.http_host}:{self.cfg.server.http_port}",
                        metrics=(f"{self.cfg.metrics.host}:{self.cfg.metrics.port}"
                                 if self.cfg.metrics.enabled else "off"))
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._loop_lag()), tg.create_task(self.signal.run()),
                         tg.create_task(self.store.run())]
                await self._stop.wait()
                await self._drain()
                # every room finishes now (their webhooks are committed before the exit and
                # sent after the restart if the endpoints cannot take them in time)
                self._deliver(self.rooms.close_all("server_shutdown", time.time()))
                if not await self.store.flush(WEBHOOK_FLUSH_S):
                    logger.info("webhooks_left_for_next_start")
                for task in tasks:
                    task.cancel()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()
            await self.media.close()
            if self.turn is not None:
                await self.turn.close()
            self.store.close()
        logger.info("server_stopped")
        return 0

    async def _start(self, app: web.Application, host: str, port: int) -> web.AppRunner:
        # request lines and header fields up to 32 KiB (aiohttp's default is 8190 bytes):
        # access tokens may be 16 KiB, in /rtc?access_token= or in an Authorization header
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               max_line_size=HTTP_MAX_LINE_BYTES,
                               max_field_size=HTTP_MAX_LINE_BYTES)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        return runner

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.cfg.server.drain_timeout_s
        # polling: sessions end in many places; a 100 ms poll is simpler than a shared event
        while self.signal.session_count() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        logger.info("drain_finished", remaining_sessions=self.signal.session_count())
        await self.signal.finish_drain()

    async def _loop_lag(self, interval_s: float = 0.5) -> None:
        window_max = 0.0
        n = 0
        while True:
            started = time.perf_counter()
            await asyncio.sleep(interval_s)
            lag = max(0.0, time.perf_counter() - started - interval_s)
            metrics.event_loop_lag.observe(lag)
            window_max = max(window_max, lag)
            n += 1
            if n >= 10:
                metrics.event_loop_lag_max.set(window_max)
                window_max, n = 0.0, 0
