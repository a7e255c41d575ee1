"""The route table's types: a :class:`Route` names its parameters, its body and answer
schemas, and the handler that serves it; a handler takes a :class:`Call` and returns a
:class:`Result` (or, for a streamed answer, a :class:`Stream`).

Two kinds of handler: pure ones over the room service (``ApiCore`` methods, synchronous,
``now`` passed in), and store-backed ones (``UsageApi`` methods, asynchronous: they await the
store's reader or writer thread and nothing else).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from sfu.api.schemas import ref
from sfu.rooms import Out
from signaling.auth import Claims

if TYPE_CHECKING:
    from sfu.api.routes import ApiCore
    from sfu.api.usage import UsageApi


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A path parameter (always required) or a query parameter."""

    name: str
    schema: dict[str, Any]
    description: str
    required: bool = True


@dataclass(slots=True, kw_only=True)
class Call:
    """One validated request, as a handler sees it: ``query`` holds the query parameters
    given, typed by their schemas (an ``integer`` parameter is an ``int``)."""

    claims: Claims | None
    now: float
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None

    @property
    def who(self) -> Claims:
        assert self.claims is not None, "authenticated routes always have claims"
        return self.claims


@dataclass(slots=True)
class Result:
    status: int
    body: Any = None
    outs: list[Out] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Stream:
    """An answer written chunk by chunk as ``chunks`` yields them (the shell sends the
    status and headers first, so a failure after that cuts the body short)."""

    status: int
    content_type: str
    chunks: AsyncGenerator[bytes, None]


Handler = Callable[["ApiCore", Call], Result]
StoreHandler = Callable[["UsageApi", Call], Awaitable[Result | Stream]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    method: str
    path: str  # OpenAPI template, also aiohttp's: "/api/rooms/{room}"
    operation_id: str
    summary: str
    description: str
    tag: str
    #: exactly one of: a pure handler over the room service, or a store-backed one
    handler: Handler | None = None
    store_handler: StoreHandler | None = None
    #: the token needs at least one of these grants; () = no authentication
    grants: tuple[str, ...] = ()
    #: the query parameters it takes (any other is refused)
    query: tuple[Param, ...] = ()
    body: str | None = None  # component schema of the JSON body
    body_required: bool = True
    status: int = 200
    response: str | None = None  # component schema of the answer; None: no content
    #: the answer's media type; not JSON: ``response`` is the schema of each line
    media_type: str = "application/json"
    #: statuses besides those every route of its shape has (see openapi.responses)
    errors: tuple[int, ...] = ()
    #: a 201's Location header
    location: bool = False
    #: OpenAPI links from the success response: name -> (operationId, {param: expression})
    links: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.store_handler is None):
            raise ValueError(f"{self.operation_id}: give exactly one of handler, store_handler")

    @property
    def path_params(self) -> tuple[Param, ...]:
        return tuple(PATH_PARAMS[name] for name in re.findall(r"\{(\w+)\}", self.path))


PATH_PARAMS: Final = {
    "room": Param(name="room", schema=ref("room_name"), description="The room's name."),
    "identity": Param(name="identity", schema=ref("identity"),
                      description="The participant's identity."),
    "track_sid": Param(name="track_sid", schema=ref("sid"), description="The track's sid."),
}
