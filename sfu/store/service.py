"""The store's shell in the daemon: opens the database (migrations, crash recovery),
journals every room event through the writer thread, checkpoints open sessions, and runs the
webhook sender.

``on_event`` is the room service's event sink: it runs synchronously in the event loop, in
event order, and only queues the write (the writer thread commits it, batched with whatever
else is waiting); the sender is woken after that commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import sqlite3
import time
from collections.abc import Callable

from sfu import log, metrics
from sfu.config import Config
from sfu.rooms import RoomEvent
from sfu.store import journal, outbox
from sfu.store.journal import SessionUsage, Subscriber
from sfu.store.writer import StoreWriter
from sfu.webhook_sender import Endpoint, WebhookSender
from sfu.webhooks import RetryPolicy

__all__ = ["StoreService"]

logger = log.get("sfu.store")

_ID_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class StoreService:
    def __init__(self, cfg: Config, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        keys = cfg.webhook_keys()
        self.subscribers = [Subscriber(e.key, frozenset(e.events))
                            for e in cfg.webhooks.endpoints]
        self.writer = StoreWriter(cfg.store.path, on_commit=self._committed)
        w = cfg.webhooks
        self.sender = WebhookSender(
            self.writer, [Endpoint(e.key, e.url, keys[e.key]) for e in cfg.webhooks.endpoints],
            RetryPolicy(w.retry_initial_s, w.retry_max_s, w.max_age_s), timeout_s=w.timeout_s,
            max_in_flight=w.max_in_flight, rng=self.rng, clock=clock)
        #: the live sessions' running totals (media side); None: no media
        self.usage: Callable[[str], SessionUsage | None] = lambda _sid: None
        self.all_usage: Callable[[], dict[str, SessionUsage]] = dict
        self.recovered_sessions = 0

    def new_id(self) -> str:
        return "EV_" + "".join(self.rng.choice(_ID_ALPHABET) for _ in range(22))

    def open(self) -> None:
        """Create or migrate the database and close what a crash left open (in the
        caller's thread: before the daemon accepts anyone)."""
        version = self.writer.open()
        now = self.clock()
        future = self.writer.submit(self._recover_job(now), notify=True)
        self.recovered_sessions = future.result(timeout=60)
        logger.info("store_opened", path=self.cfg.store.path, schema_version=version,
                    recovered_sessions=self.recovered_sessions,
                    webhook_endpoints=len(self.subscribers))

    def _recover_job(self, now: float) -> Callable[[sqlite3.Connection], int]:
        def job(conn: sqlite3.Connection) -> int:
            before = conn.execute("SELECT COUNT(*) FROM sessions WHERE left_at IS NULL"
                                  ).fetchone()[0]
            journal.recover(conn, now, self.subscribers, self.new_id)
            return int(before)
        return job

    def on_event(self, ev: RoomEvent) -> None:
        usage = (self.usage(ev.session_id)
                 if ev.type == "participant_left" and ev.session_id is not None else None)
        subscribers = self.subscribers
        future = self.writer.submit(lambda c: journal.record(c, ev, subscribers, usage),
                                    notify=bool(subscribers))
        future.add_done_callback(self._check_write)

    @staticmethod
    def _check_write(future: concurrent.futures.Future[list[tuple[str, str]]]) -> None:
        if future.exception() is not None:
            metrics.store_errors.labels(reason="write").inc()

    def _committed(self) -> None:
        self.sender.wake()

    async def run(self) -> None:
        """Checkpoints every ``store.checkpoint_interval_s``, and the webhook sender."""
        sender = asyncio.create_task(self.sender.run())
        try:
            while True:
                await asyncio.sleep(self.cfg.store.checkpoint_interval_s)
                await self.checkpoint()
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def checkpoint(self) -> None:
        now = self.clock()
        usages = self.all_usage()
        try:
            await self.writer.run(lambda c: journal.checkpoint(c, now, usages))
        except Exception as exc:  # counted and logged by the writer; the next one retries
            logger.warning("store_checkpoint_failed", error=str(exc))
            return
        metrics.store_checkpoints.inc()

    async def flush(self, timeout_s: float) -> bool:
        """Give the sender up to ``timeout_s`` to deliver what is due (a clean shutdown);
        True when nothing due is left. What remains is sent after the next start."""
        if not self.subscribers:
            return True
        deadline = time.monotonic() + timeout_s
        names = sorted(e.key for e in self.cfg.webhooks.endpoints)
        while True:
            now = self.clock()
            heads = await self.writer.run(lambda c: outbox.heads(c, names))
            if not any(h.next_attempt_at <= now for h in heads) and not self.sender.busy:
                return True
            if time.monotonic() >= deadline:
                return False
            self.sender.wake()
            await asyncio.sleep(0.05)

    def close(self) -> None:
        """Commit everything queued and stop the writer (after the sender stopped)."""
        self.writer.close()
