"""What a metrics or details read asks for, every parameter checked before anything is opened.

The `retraction_metrics` and `retraction_details` actions and the command line's `metrics`
and `details` read the same parameters; this is the one place that checks them:

    query = parse_query({"last": "24h", "status": "failed", "limit": "20"}, rows=True)
    rows, next_cursor = ledger.details(query.window, query.filters, **query.details_args())

Parameters: `last` or `since`/`until` (the window), the filters `provider`, `mode`,
`trigger`, `disposition`, `destination`, and for rows `status`, `reason`, `recipient`,
`message_id`, `limit` (1..MAX_LIMIT, default DEFAULT_LIMIT) and `cursor` (the previous page's
`next_cursor`, passed back unchanged). Empty values mean "not given". Every error is an
`InvalidParameter` naming the parameter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

from retraction.metrics.errors import InvalidParameter
from retraction.metrics.record import Filters
from retraction.metrics.window import Window, parse_window
from retraction.model import Reason, Status
from retraction.validation import InvalidRequest, address, message_id

FORMATS = ("json", "text", "markdown", "html")
FILTERS = ("provider", "mode", "trigger", "disposition", "destination")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000  # rows per page; the ledger refuses more
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{1,100}")


@dataclass(frozen=True)
class Query:
    """A checked read: the window and filters (metrics and details), and for details the
    row conditions and the page."""

    window: Window
    filters: Filters
    status: Optional[str] = None
    reason: Optional[str] = None
    recipient: Optional[str] = None
    message_id: Optional[str] = None
    limit: int = DEFAULT_LIMIT
    cursor: Optional[str] = None

    def details_args(self) -> Dict[str, Any]:
        """The keyword arguments of `Ledger.details` after the window and the filters."""
        return {"status": self.status, "reason": self.reason, "recipient": self.recipient,
                "message_id": self.message_id, "limit": self.limit, "cursor": self.cursor}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def word(name: str, value: Any, words: Sequence[str]) -> Optional[str]:
    """One of `words` (compared in lower case), or None when not given."""
    if _blank(value):
        return None
    text = str(value).strip().lower()
    if text not in words:
        raise InvalidParameter(name, "{!r} is not one of {}".format(value, ", ".join(words)))
    return text


def card_format(value: Any, default: str = "text") -> str:
    """The `format` parameter of the card: json, text, markdown or html."""
    return word("format", default if _blank(value) else value, FORMATS) or default


def _checked(name: str, check: Any, value: Any) -> Optional[str]:
    """A value from a `retraction.validation` check, its error as an InvalidParameter."""
    if _blank(value):
        return None
    try:
        return check(value, name)
    except InvalidRequest as exc:
        raise InvalidParameter(name, exc.problem) from None


def limit(value: Any) -> int:
    """Rows per page: a whole number (or its digits as text) from 1 to MAX_LIMIT."""
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidParameter("limit", "must be a whole number from 1 to {}, got {!r}".format(
            MAX_LIMIT, value))
    return value


def cursor(value: Any) -> Optional[str]:
    """The shape of a cursor; the ledger checks its signature and that it continues the same
    query."""
    if _blank(value):
        return None
    if not isinstance(value, str) or not _CURSOR_RE.fullmatch(value.strip()):
        raise InvalidParameter("cursor", "is malformed; pass back the next_cursor of the "
                                         "previous page unchanged")
    return value.strip()


def parse_query(params: Mapping[str, Any], rows: bool = False) -> Query:
    """The checked query of `params` (a mapping of the parameter names above). With
    `rows=False` (metrics) only the window and the filters are read."""
    window = parse_window(last=params.get("last"), since=params.get("since"),
                          until=params.get("until"))
    filters = Filters.of({name: params.get(name) for name in FILTERS})
    if not rows:
        return Query(window=window, filters=filters)
    return Query(
        window=window,
        filters=filters,
        status=word("status", params.get("status"), Status.values()),
        reason=word("reason", params.get("reason"), Reason.values()),
        recipient=_checked("recipient", address, params.get("recipient")),
        message_id=_checked("message_id", message_id, params.get("message_id")),
        limit=limit(params.get("limit")),
        cursor=cursor(params.get("cursor")),
    )
