"""The HTTP port (health, readiness, signaling at /rtc, the REST API under /api/, later the
meeting page) and the metrics port, as aiohttp applications. The composition root decides what
is mounted: ``SignalServer.mount`` and ``ApiServer.mount`` add their routes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from sfu import metrics

STATIC_DIR = Path(__file__).resolve().parent / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.http_requests.labels(route, request.method, str(status)).inc()
        metrics.http_request_duration.labels(route, request.method).observe(
            time.perf_counter() - started)


def make_http_app(*, is_ready: Callable[[], bool]) -> web.Application:
    app = web.Application(middlewares=[_observe], client_max_size=1024 * 1024)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "draining"}, status=503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_static("/static/", STATIC_DIR)
    return app


def make_metrics_app() -> web.Application:
    app = web.Application()

    async def handle(_: web.Request) -> web.Response:
        body = metrics.render()
        return web.Response(body=body, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_get("/metrics", handle)
    return app
