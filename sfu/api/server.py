"""The REST API's aiohttp shell, mounted under ``/api/`` on the HTTP port.

Per request: authenticate the bearer token (401), spend one request of its API key's rate
limit (429), check the route's grants (403), validate path, query and body against the
OpenAPI document's schemas (400 / 413 / 415 / 422), call the handler — a pure one over the
room service, or a store-backed one that awaits the store — deliver the room service's
messages to the participants' sessions, answer (or stream the answer). Every refusal is
``{"error": {"code", "message"}}``, counted in ``sfu_api_errors_total{code}``; a bug answers
500 ``internal_error``, is logged once and never takes the daemon down.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import MatchInfoError

import sfu
from sfu import log, metrics
from sfu.api import errors as AE
from sfu.api import jsonbody
from sfu.api.auth import api_key, bearer_token, require_any
from sfu.api.errors import ApiError, from_signaling, unauthorized
from sfu.api.openapi import RequestValidators, build_document
from sfu.api.ratelimit import KeyedRateLimiter
from sfu.api.routes import ROUTES, ApiCore, Call, Result, Route
from sfu.api.table import Stream
from sfu.api.usage import UsageApi
from sfu.config import ApiConfig
from sfu.rooms import Out, RoomService
from sfu.store.writer import StoreWriter
from signaling.auth import Claims, TokenVerifier
from signaling.errors import AuthError, SignalingError

logger = log.get("sfu.api")

PREFIX = "/api"
_CORS_ALLOW_HEADERS = "Authorization, Content-Type"
_CORS_EXPOSE_HEADERS = "Location, Retry-After, WWW-Authenticate"
_CORS_MAX_AGE_S = 600


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class ApiServer:
    """Wires the API core to aiohttp; ``deliver`` routes room service messages to sessions."""

    def __init__(self, cfg: ApiConfig, *, verifier: TokenVerifier, rooms: RoomService,
                 deliver: Callable[[list[Out]], None], minting_keys: Mapping[str, str],
                 join_base_url: str,
                 participant_media: Callable[[str], dict[str, Any] | None] | None = None,
                 store: StoreWriter | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.store = store  # usage records and the webhook outbox (the /api/usage routes)
        self.verifier = verifier
        self.deliver = deliver
        self.clock = clock
        self.monotonic = monotonic
        self.document = build_document(ROUTES, version=sfu.__version__)
        self.validators = RequestValidators(self.document, ROUTES)
        self.core = ApiCore(rooms, minting_keys=minting_keys, join_base_url=join_base_url,
                            participant_media=participant_media,
                            openapi=lambda: self.document)
        self.usage = UsageApi(store)
        self.limiter = KeyedRateLimiter(cfg.rate_limit_per_s, cfg.rate_limit_burst)
        self.any_origin = "*" in cfg.cors_origins
        self.origins = frozenset(o.lower() for o in cfg.cors_origins if o != "*")

    def mount(self, app: web.Application) -> None:
        api = web.Application(middlewares=[self._middleware])
        for route in ROUTES:
            api.router.add_route(route.method, route.path.removeprefix(PREFIX),
                                 self._handler(route), name=route.operation_id)
        app.add_subapp(PREFIX, api)

    # -- responses -----------------------------------------------------------------------
    def _error(self, exc: ApiError) -> web.Response:
        metrics.api_errors.labels(exc.code).inc()
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers,
                                 dumps=_dumps)

    def _origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin.lower() in self.origins)

    def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """The CORS headers, when the request's origin is allowed (before they are sent)."""
        origin = request.headers.get("Origin")
        if origin is not None and self._origin_allowed(origin) and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if (request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
                and self._origin_allowed(request.headers.get("Origin"))):
            response = self._preflight(request)
        else:
            response = await self._respond(request, handler)
        self._cors(request, response)  # a streamed answer got them before its headers went
        return response

    async def _respond(self, request: web.Request,
                       handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as exc:
            return self._error(exc)
        except web.HTTPMethodNotAllowed as exc:
            allow = ", ".join(sorted(exc.allowed_methods))
            return self._error(ApiError(405, AE.METHOD_NOT_ALLOWED,
                                        f"{request.method} is not allowed here (allowed: "
                                        f"{allow})", {"Allow": allow}))
        except web.HTTPNotFound:
            return self._error(ApiError(404, AE.NOT_FOUND,
                                        f"no API route {request.path[:200]!r}"))
        except web.HTTPException as exc:  # pragma: no cover - aiohttp's own refusals
            return self._error(ApiError(exc.status, AE.MALFORMED_REQUEST, exc.reason))
        except Exception:  # a bug answers 500 and ends this request only
            logger.exception("api_handler_failed", path=request.path[:200],
                             method=request.method)
            return self._error(ApiError(500, AE.INTERNAL_ERROR, "internal error"))

    def _preflight(self, request: web.Request) -> web.StreamResponse:
        match = request.match_info
        if isinstance(match, MatchInfoError):
            exc = match.http_exception
            if not isinstance(exc, web.HTTPMethodNotAllowed):
                return self._error(ApiError(404, AE.NOT_FOUND,
                                            f"no API route {request.path[:200]!r}"))
            methods = sorted(exc.allowed_methods)
        else:  # pragma: no cover - no route takes OPTIONS itself
            methods = [request.method]
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": _CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": str(_CORS_MAX_AGE_S)})

    # -- requests ------------------------------------------------------------------------
    def _handler(self, route: Route) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(route, request)

        return handle

    def _authenticate(self, route: Route, request: web.Request, now: float) -> Claims | None:
        if not route.grants:
            return None
        try:
            claims = self.verifier.verify(bearer_token(request.headers.get("Authorization")),
                                          now)
        except AuthError as exc:
            raise unauthorized(exc) from None
        wait_s = self.limiter.take(api_key(claims), self.monotonic())
        if wait_s > 0:
            raise ApiError(429, AE.RATE_LIMITED,
                           f"more than {self.cfg.rate_limit_per_s:g} requests/s for this API "
                           f"key; retry in {wait_s:.2f} s",
                           {"Retry-After": str(max(1, math.ceil(wait_s)))})
        require_any(claims, route.grants)
        return claims

    async def _read_body(self, route: Route, request: web.Request) -> Any:
        if route.body is None:
            return None
        limit = self.cfg.max_request_bytes
        too_large = ApiError(413, AE.REQUEST_TOO_LARGE,
                             f"the body exceeds the limit of {limit} bytes")
        length = request.content_length
        if length is not None and length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            if route.body_required:
                raise ApiError(400, AE.MALFORMED_REQUEST, "a JSON request body is required")
            return {}
        jsonbody.check_media_type(request.content_type, request.charset)
        return self.validators.body(route, jsonbody.decode(raw))

    async def _handle(self, route: Route, request: web.Request) -> web.StreamResponse:
        now = self.clock()
        claims = self._authenticate(route, request, now)
        path = self.validators.path(route, request.match_info)
        query = self.validators.query(route, request.query)
        call = Call(claims=claims, now=now, path=path, query=query)
        call.body = await self._read_body(route, request)
        result: Result | Stream
        try:
            if route.store_handler is not None:
                result = await route.store_handler(self.usage, call)
            else:
                assert route.handler is not None
                result = route.handler(self.core, call)
        except SignalingError as exc:
            raise from_signaling(exc) from None
        if isinstance(result, Stream):
            return await self._stream(request, result)
        if result.outs:
            self.deliver(result.outs)
        if route.method != "GET":
            body = call.body or {}
            created = result.body if isinstance(result.body, dict) else {}
            logger.info("api_call", operation=route.operation_id, status=result.status,
                        room=(call.path.get("room") or body.get("room") or body.get("room_id")
                              or created.get("name")),
                        participant=call.path.get("identity") or body.get("identity"),
                        api_key=api_key(claims) if claims else None)
        if result.body is None:
            return web.Response(status=result.status, headers=result.headers)
        return web.json_response(result.body, status=result.status, headers=result.headers,
                                 dumps=_dumps)

    async def _stream(self, request: web.Request, stream: Stream) -> web.StreamResponse:
        """Send the status and headers, then each chunk as it comes. A failure after the
        headers cannot be answered as an error: it is logged and the connection is closed
        before the body's end, so the client sees a truncated answer, never a short one
        that looks complete."""
        response = web.StreamResponse(status=stream.status,
                                      headers={"Content-Type": stream.content_type})
        self._cors(request, response)
        await response.prepare(request)
        async with contextlib.aclosing(stream.chunks) as chunks:
            try:
                async for chunk in chunks:
                    await response.write(chunk)
            except ConnectionError:  # the client went away
                return response
            except Exception:
                logger.exception("api_handler_failed", path=request.path[:200],
                                 method=request.method)
                metrics.api_errors.labels(AE.INTERNAL_ERROR).inc()
                if request.transport is not None:
                    request.transport.close()
                return response
        await response.write_eof()
        return response
