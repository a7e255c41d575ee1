"""The package's one exception tree. A :class:`TurnError` carries its STUN error code."""

from __future__ import annotations

__all__ = ["REASONS", "TurnConfigError", "TurnError"]

# Reason phrases sent in ERROR-CODE. 403 says "Forbidden IP" like coturn, so a coturn client
# prints the same line whichever server refused it.
REASONS: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden IP",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}


class TurnError(Exception):
    """A request failed with a STUN error ``code`` (``TurnError(437, "allocation mismatch")``)."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.reason = REASONS.get(code, "Error")
        self.detail = detail or self.reason
        super().__init__(f"{code} {self.detail}")


class TurnConfigError(TurnError, ValueError):
    """A TURN configuration value is unknown, of the wrong type or out of bounds."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(0, f"{path}: {message}" if path else message)
        self.args = (f"{path}: {message}" if path else message,)

    def __str__(self) -> str:
        return str(self.args[0])
