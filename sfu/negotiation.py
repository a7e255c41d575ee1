"""Server offers on a subscriber transport go one at a time (pure state).

While an offer is outstanding, further changes only mark the negotiation dirty; the client's
answer then releases one merged offer covering all of them (LiveKit's model; it avoids glare
and never has two offers in flight).
"""

from __future__ import annotations


class SubscriberNegotiator:
    __slots__ = ("outstanding_version", "dirty", "offers", "answers")

    def __init__(self) -> None:
        self.outstanding_version: int | None = None
        self.dirty = False
        self.offers = 0
        self.answers = 0

    def want_offer(self) -> bool:
        """Something changed: True if an offer may be sent now, else it is merged later."""
        if self.outstanding_version is not None:
            self.dirty = True
            return False
        return True

    def offered(self, version: int) -> None:
        if self.outstanding_version is not None:
            raise RuntimeError("an offer is already outstanding")
        self.outstanding_version = version
        self.dirty = False
        self.offers += 1

    def answered(self, version: int) -> bool:
        """The client answered ``version``; True if a merged follow-up offer is due."""
        if self.outstanding_version != version:
            raise ValueError(f"answer for offer version {version}, but "
                             f"{self.outstanding_version} is outstanding")
        self.outstanding_version = None
        self.answers += 1
        return self.dirty
