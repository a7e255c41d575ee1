"""The REST API's errors: each carries its HTTP status and its wire code.

Every failure is answered as ``{"error": {"code": ..., "message": ...}}``. Codes shared with
signaling (``token_*``, ``permission_denied``, ``room_not_found``, …) keep their names; the
HTTP-only ones are defined here. :func:`from_signaling` maps a room service or token error to
its status, so the room logic raises the same errors whoever calls it.
"""

from __future__ import annotations

from collections.abc import Mapping

from signaling import errors as E
from signaling.errors import AuthError, SignalingError

# HTTP-only codes
MALFORMED_REQUEST = "malformed_request"        # 400: the body is not JSON; a repeated query parameter
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415: a body that is not application/json
INVALID_REQUEST = "invalid_request"            # 422: a parameter or body breaks its schema
REQUEST_TOO_LARGE = "request_too_large"        # 413: the body exceeds api.max_request_bytes
METHOD_NOT_ALLOWED = "method_not_allowed"      # 405: the path exists, the method does not
NOT_FOUND = E.NOT_FOUND                        # 404: no such path, participant or track
RATE_LIMITED = E.RATE_LIMITED                  # 429: over the API key's rate limit
PERMISSION_DENIED = E.PERMISSION_DENIED        # 403: the token does not allow this
NOT_IMPLEMENTED = E.NOT_IMPLEMENTED            # 501: this server cannot do it (no HS256 key)
INTERNAL_ERROR = E.INTERNAL_ERROR              # 500: a bug; logged
STORE_UNAVAILABLE = "store_unavailable"        # 503: this server keeps no store

# Room service and token codes → HTTP status.
_STATUS: Mapping[str, int] = {
    E.PERMISSION_DENIED: 403,
    E.NOT_FOUND: 404,
    E.ROOM_NOT_FOUND: 404,
    E.ROOM_EXISTS: 409,
    E.ROOM_FULL: 409,
    E.INVALID_MESSAGE: 422,
    E.RATE_LIMITED: 429,
    E.NOT_IMPLEMENTED: 501,
}
# Room service codes renamed for HTTP callers.
_CODE: Mapping[str, str] = {E.INVALID_MESSAGE: INVALID_REQUEST}

#: every code the API answers with (the OpenAPI document lists them)
CODES: tuple[str, ...] = (
    MALFORMED_REQUEST, E.TOKEN_MISSING, E.TOKEN_MALFORMED, E.TOKEN_BAD_SIGNATURE,
    E.TOKEN_ALG_NOT_ALLOWED, E.TOKEN_UNKNOWN_KEY, E.TOKEN_EXPIRED, E.TOKEN_NOT_YET_VALID,
    PERMISSION_DENIED, NOT_FOUND, E.ROOM_NOT_FOUND, METHOD_NOT_ALLOWED, E.ROOM_EXISTS,
    E.ROOM_FULL, REQUEST_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, INVALID_REQUEST, RATE_LIMITED, INTERNAL_ERROR,
    NOT_IMPLEMENTED, STORE_UNAVAILABLE,
)


class ApiError(Exception):
    """A request was refused: ``status`` is the HTTP status, ``code`` the wire code."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def unauthorized(exc: AuthError) -> ApiError:
    """401 with the token code, and the RFC 6750 challenge."""
    error = "invalid_request" if exc.code == E.TOKEN_MISSING else "invalid_token"
    challenge = 'Bearer realm="sfu"' if exc.code == E.TOKEN_MISSING else \
        f'Bearer realm="sfu", error="{error}"'
    return ApiError(401, exc.code, exc.message, {"WWW-Authenticate": challenge})


def from_signaling(exc: SignalingError) -> ApiError:
    """The HTTP form of a room service or token error."""
    if isinstance(exc, AuthError):
        return unauthorized(exc)
    status = _STATUS.get(exc.code)
    if status is None:  # a code the API never expects from the room service: a bug
        return ApiError(500, INTERNAL_ERROR, f"unexpected {exc.code}: {exc.message}")
    return ApiError(status, _CODE.get(exc.code, exc.code), exc.message)
