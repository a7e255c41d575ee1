"""Who may call the API: bearer tokens and their admin grants.

The API takes the same JWTs as signaling (``sfu token create --admin`` prints one): an admin
token with ``roomCreate``, ``roomList``, ``roomAdmin`` and/or ``roomRecord``. A token whose
grant names a ``room`` acts on that room only. Pure: the shell passes the verified claims.
"""

from __future__ import annotations

from typing import Final

from sfu.api import errors as AE
from sfu.api.errors import ApiError
from signaling import errors as E
from signaling.auth import Claims
from signaling.errors import AuthError

#: admin grants by attribute, with their claim names for messages
ADMIN_GRANTS: Final = {"room_create": "roomCreate", "room_list": "roomList",
                       "room_admin": "roomAdmin", "room_record": "roomRecord"}


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; AuthError when absent."""
    if not header:
        raise AuthError(E.TOKEN_MISSING, "no Authorization: Bearer header")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(E.TOKEN_MISSING, "the Authorization header is not 'Bearer <token>'")
    return token


def api_key(claims: Claims) -> str:
    """The API key a verified token belongs to: its ``kid`` (RS256/ES256) or ``iss`` (HS256)."""
    return f"kid:{claims.key_id}" if claims.key_id else f"iss:{claims.issuer}"


def require_any(claims: Claims, grants: tuple[str, ...]) -> None:
    """403 unless the token has at least one of ``grants`` (attribute names)."""
    if not any(getattr(claims.grant, g) for g in grants):
        names = " or ".join(ADMIN_GRANTS[g] for g in grants)
        raise ApiError(403, AE.PERMISSION_DENIED, f"token does not grant {names}")


def require(claims: Claims, grant: str, why: str) -> None:
    """403 unless the token has ``grant``; ``why`` says what needed it."""
    if not getattr(claims.grant, grant):
        raise ApiError(403, AE.PERMISSION_DENIED,
                       f"token does not grant {ADMIN_GRANTS[grant]} (needed for {why})")


def check_room(claims: Claims, room: str) -> None:
    """403 when the token is limited to another room."""
    bound = claims.grant.room
    if bound and room != bound:
        raise ApiError(403, AE.PERMISSION_DENIED,
                       f"token is limited to room {bound!r}, not {room!r}")
