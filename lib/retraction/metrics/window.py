"""The time window a metric record or a details search covers.

Either `last` (a duration back from now: `15m`, `24h`, `7d`, `4w`) or `since`/`until`
(ISO 8601; a time without an offset is UTC). The window is half-open: since <= t < until.
The ISO parser is our own so that Python 3.8 (whose `fromisoformat` refuses `Z` and most
fractions) accepts exactly what 3.11 does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional, Union

from retraction.metrics.errors import InvalidParameter

DEFAULT_LAST = "24h"
MAX_SPAN = timedelta(days=731)  # two years: beyond that a record is a report, not a card

_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_LAST = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$", re.IGNORECASE)
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)

TimeInput = Union[str, datetime, None]


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    last: Optional[str] = None  # the `last` it was parsed from, for the label

    @property
    def label(self) -> str:
        if self.last:
            return "last {}".format(self.last)
        return "{} to {}".format(format_utc(self.since), format_utc(self.until))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "last": self.last,
            "label": self.label,
        }


def format_utc(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_time(field: str, value: TimeInput) -> Optional[datetime]:
    """An aware UTC datetime from ISO 8601 text or a datetime; naive means UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = _parse_iso(field, value.strip())
    else:
        raise InvalidParameter(field, "expected an ISO 8601 time, got {}".format(
            type(value).__name__))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _parse_iso(field: str, text: str) -> datetime:
    match = _ISO.match(text)
    if not match:
        raise InvalidParameter(field, "{!r} is not an ISO 8601 time, e.g. "
                                      "2024-05-01T08:00:00Z".format(text))
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = None
    if offset:
        if offset.upper() == "Z":
            tz = timezone.utc
        else:
            digits = offset[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            tz = timezone(-delta if offset[0] == "-" else delta)
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                        int(second or 0), micro, tzinfo=tz)
    except ValueError as error:
        raise InvalidParameter(field, "{!r} is not a valid time ({})".format(text, error))


def parse_last(value: str) -> timedelta:
    match = _LAST.match(value) if isinstance(value, str) else None
    if not match:
        raise InvalidParameter("last", "{!r} is not a duration: use a number and a unit "
                                       "m, h, d or w, e.g. 15m, 24h, 7d, 4w".format(value))
    amount, unit = int(match.group(1)), match.group(2).lower()
    if amount == 0:
        raise InvalidParameter("last", "{!r} is empty: use a positive duration".format(value))
    span = timedelta(**{_UNITS[unit]: amount})
    if span > MAX_SPAN:
        raise InvalidParameter("last", "{!r} is longer than {} days".format(
            value, MAX_SPAN.days))
    return span


def parse_window(last: Optional[str] = None, since: TimeInput = None, until: TimeInput = None,
                 now: Optional[datetime] = None) -> Window:
    """Build a Window; with no argument at all, the last 24 hours."""
    now = parse_time("now", now) or datetime.now(timezone.utc)
    if last not in (None, "") and (since not in (None, "") or until not in (None, "")):
        raise InvalidParameter("last", "give either last or since/until, not both")
    if last not in (None, "") or (since in (None, "") and until in (None, "")):
        text = DEFAULT_LAST if last in (None, "") else str(last).strip()
        return Window(since=now - parse_last(text), until=now, last=text.lower())
    start = parse_time("since", since)
    end = parse_time("until", until)
    if start is None:
        raise InvalidParameter("since", "is required when until is given")
    if end is None:
        end = now
    if start >= end:
        raise InvalidParameter("since", "{} is not before until {}".format(
            start.isoformat(), end.isoformat()))
    if end - start > MAX_SPAN:
        raise InvalidParameter("since", "the window is longer than {} days".format(
            MAX_SPAN.days))
    return Window(since=start, until=end)
