"""Times in query strings: unix seconds, or RFC 3339 date-times. Pure.

The request validators check the ``date-time`` format with :func:`parse_date_time`, and the
handlers convert with :func:`unix_time`, so what passes validation is what gets converted.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

_DATE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
_SECONDS: Final = slice(17, 19)  # "YYYY-MM-DDTHH:MM:SS"


def parse_date_time(text: str) -> float:
    """Unix seconds of an RFC 3339 date-time (``2026-11-23T18:00:00Z``,
    ``2026-11-23T19:00:00.5+01:00``); a leap second (``:60``) counts as the next second.
    ValueError with the reason when ``text`` is not one."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError("expected unix seconds or an RFC 3339 date-time such as "
                         "2026-11-23T18:00:00Z")
    leap = match.group(1) == "60"
    if leap:
        text = text[:_SECONDS.start] + "59" + text[_SECONDS.stop:]
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError as exc:  # a day, hour or offset out of range
        raise ValueError(str(exc)) from None
    return moment.timestamp() + (1.0 if leap else 0.0)


def unix_time(value: float | str) -> float:
    """A validated time parameter as unix seconds."""
    return parse_date_time(value) if isinstance(value, str) else float(value)
