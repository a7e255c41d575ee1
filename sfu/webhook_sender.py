"""Webhook delivery, the shell: reads the outbox's head rows from the store, POSTs them with
aiohttp, records each attempt through the store's writer, and sleeps until the next retry
or the next commit that queued deliveries (:meth:`WebhookSender.wake`, thread-safe).

At least once: a row leaves ``pending`` only after its endpoint answered 2xx (or it is
failed after ``max_age_s``); a crash between the answer and the write sends it again, with
the same ``webhook-id`` for the receiver to deduplicate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

import sfu
from sfu import log, metrics
from sfu.store import outbox
from sfu.store.writer import StoreWriter
from sfu.webhooks import Delivery, RetryPolicy, headers, outcome, plan

__all__ = ["Endpoint", "WebhookSender"]

logger = log.get("sfu.webhooks")


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    url: str
    key: bytes


class WebhookSender:
    def __init__(self, store: StoreWriter, endpoints: list[Endpoint], policy: RetryPolicy, *,
                 timeout_s: float, max_in_flight: int, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.endpoints = {e.name: e for e in endpoints}
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def busy(self) -> bool:
        """A POST is in flight."""
        return bool(self._in_flight)

    def wake(self) -> None:
        """Something new may be due (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.endpoints:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": f"pysfu-webhooks/{sfu.__version__}"})
        names = sorted(self.endpoints)
        try:
            while True:
                self._wake.clear()
                heads = await self.store.run(lambda c: outbox.heads(c, names))
                metrics.webhook_pending_heads.set(len(heads))
                busy: dict[str, int] = {}
                for endpoint, _ in self._in_flight:
                    busy[endpoint] = busy.get(endpoint, 0) + 1
                due, wake_at = plan(heads, self._in_flight, self.clock(),
                                    max_in_flight=self.max_in_flight, busy=busy)
                for d in due:
                    self._in_flight[d.key] = asyncio.create_task(self._attempt(d))
                timeout = None if wake_at is None else max(0.0, wake_at - self.clock())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._session.close()

    async def _attempt(self, d: Delivery) -> None:
        endpoint = self.endpoints[d.endpoint]
        status: int | None = None
        error: str | None = None
        try:
            stamp = int(self.clock())  # the time of this attempt, not of the event
            async with self._session.post(  # type: ignore[union-attr]
                    endpoint.url, data=d.body,
                    headers=headers(endpoint.key, d.event_id, stamp, d.body)) as resp:
                status = resp.status
                await resp.read()
            ok = 200 <= status < 300
            if not ok:
                error = f"HTTP {status}"
            metrics.webhook_attempts.labels(code=f"{status // 100}xx").inc()
        except TimeoutError:
            ok, error = False, f"no answer in {self.timeout_s:g} s"
            metrics.webhook_attempts.labels(code="timeout").inc()
        except aiohttp.ClientError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
            metrics.webhook_attempts.labels(code="connection").inc()
        now = self.clock()
        result = outcome(d, ok, now, self.policy, self.rng)
        try:
            await self.store.run(lambda c: outbox.mark(c, d.id, result, now,
                                                       http_status=status, error=error))
        finally:
            self._in_flight.pop(d.key, None)
            self._wake.set()
        metrics.webhook_deliveries.labels(reason=result.status).inc()
        if result.status == "delivered":
            metrics.webhook_delivery_latency.observe(max(0.0, now - d.created_at))
        elif result.status == "failed":
            logger.warning("webhook_failed", endpoint=d.endpoint, room=d.room,
                           event_id=d.event_id, type=d.event_type, attempts=d.attempts + 1,
                           error=error)
        elif d.attempts == 0:  # the first failure of a delivery, not every retry
            logger.info("webhook_retrying", endpoint=d.endpoint, room=d.room,
                        event_id=d.event_id, error=error,
                        retry_in_s=round((result.next_attempt_at or now) - now, 1))
