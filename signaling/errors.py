"""One exception tree for the signaling package; each error carries its wire code.

The wire codes are documented in ``docs/protocol.md`` (section "Error codes"). One dispatcher
in the WebSocket shell turns a :class:`SignalingError` into an ``error`` message.
"""

from __future__ import annotations

# Token rejections (sent as ``error`` then the socket closes with CLOSE_AUTH_FAILED).
TOKEN_MALFORMED = "token_malformed"
TOKEN_BAD_SIGNATURE = "token_bad_signature"
TOKEN_ALG_NOT_ALLOWED = "token_alg_not_allowed"
TOKEN_UNKNOWN_KEY = "token_unknown_key"
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
TOKEN_WRONG_ROOM = "token_wrong_room"
TOKEN_MISSING_ROOM_JOIN = "token_missing_room_join"
TOKEN_MISSING = "token_missing"

# Message-level errors (the connection stays open).
MALFORMED_MESSAGE = "malformed_message"
UNKNOWN_TYPE = "unknown_type"
INVALID_MESSAGE = "invalid_message"
MESSAGE_TOO_LARGE = "message_too_large"
RATE_LIMITED = "rate_limited"
PERMISSION_DENIED = "permission_denied"
NOT_FOUND = "not_found"
ROOM_NOT_FOUND = "room_not_found"
ROOM_EXISTS = "room_exists"
ROOM_FULL = "room_full"
NOT_IMPLEMENTED = "not_implemented"
SERVER_DRAINING = "server_draining"
RESUME_FAILED = "resume_failed"
NOT_JOINED = "not_joined"
INTERNAL_ERROR = "internal_error"

# WebSocket close codes (RFC 6455 private range 4000-4999 for ours).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_AUTH_FAILED = 4001
CLOSE_JOIN_REFUSED = 4003
CLOSE_RATE_LIMITED = 4008
CLOSE_LEFT = 4010


class SignalingError(Exception):
    """Root of the signaling package's errors."""

    code: str = INTERNAL_ERROR

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class AuthError(SignalingError):
    """A token was rejected."""


class ProtocolError(SignalingError):
    """A message was malformed, unknown, invalid or not allowed."""
