"""Microsoft Graph wire details: URLs, the error envelope, what each answer means for a copy.

Pure functions (no I/O) so the escaping and the classification are testable on their own.
URLs here are relative to the Graph root (`.../v1.0`), the form `$batch` items want.
"""
from __future__ import annotations

import email.utils
import functools
import random
import re
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

from retraction.model import Destination, Reason

# Every request asks for immutable ids, so a moved copy keeps its id and a retried lookup
# still recognises it.
PREFER_IMMUTABLE = 'IdType="ImmutableId"'
LOOKUP_SELECT = "id,internetMessageId,isRead,parentFolderId"
LOOKUP_TOP = 10
BATCH_LIMIT = 20  # Graph's $batch maximum
MAILBOX_CONCURRENCY = 4  # Exchange Online: concurrent requests per app and mailbox

# Canonical folder (DESIGN word) <-> Graph well-known folder name.
WELL_KNOWN = {
    "inbox": "inbox",
    "junk": "junkemail",
    "trash": "deleteditems",
    "soft_delete": "recoverableitemsdeletions",
    "archive": "archive",
}
CANONICAL_OF = {name: canonical for canonical, name in WELL_KNOWN.items()}
# Where a destination sends a copy (hard_delete is permanentDelete, not a folder).
DESTINATION_FOLDER = {
    Destination.INBOX.value: "inbox",
    Destination.JUNK.value: "junkemail",
    Destination.TRASH.value: "deleteditems",
    Destination.SOFT_DELETE.value: "recoverableitemsdeletions",
}
# A restore brings copies back only from where a retraction puts them.
RESTORABLE = ("junk", "trash", "soft_delete")

NOT_A_MAILBOX_CODES = ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "ResourceNotFound")
ITEM_GONE_CODES = ("ErrorItemNotFound",)


# Characters quote(safe="") escapes: all but RFC 3986's unreserved ones.
_RESERVED = re.compile(r"[^A-Za-z0-9_.~-]")


@functools.lru_cache(maxsize=256)
def _escape(char: str) -> str:
    return quote(char, safe="")


def quote_segment(text: str) -> str:
    """quote(text, safe=""), escaping only the characters that need it: quote() walks every
    byte in Python once one character needs escaping, as in each copy id (base64, with '=').
    Same result: quote() escapes each character's UTF-8 bytes on their own."""
    return _RESERVED.sub(lambda match: _escape(match.group()), text)


def user_path(address: str) -> str:
    # quote() leaves no '/', '?', '#' or '%' of an address able to change the path.
    return "/users/" + quote(address, safe="@")


def odata_literal(value: str) -> str:
    """An OData string literal: quotes around, an inner `'` doubled."""
    return "'" + value.replace("'", "''") + "'"


def filter_param(field: str, value: str) -> str:
    """`$filter=field eq '<value>'` with the whole expression percent-encoded: a raw `+` would
    otherwise reach the server as a space, `&`/`#` would cut the query."""
    return "$filter=" + quote("%s eq %s" % (field, odata_literal(value)), safe="")


@functools.lru_cache(maxsize=64)
def _lookup_tail(message_id: str, folder: Optional[str]) -> str:
    # The same for every copy of a run: built once, not per copy.
    tail = "/mailFolders/" + quote(folder, safe="") if folder else ""
    return "%s/messages?%s&$select=%s&$top=%d" % (
        tail, filter_param("internetMessageId", message_id), LOOKUP_SELECT, LOOKUP_TOP)


def lookup_url(address: str, message_id: str, folder: Optional[str] = None) -> str:
    """Find copies by Internet Message-ID, in the whole mailbox or in one well-known folder
    (Recoverable Items are only listed through their folder)."""
    return user_path(address) + _lookup_tail(message_id, folder)


def folder_url(address: str, well_known: str) -> str:
    return "%s/mailFolders/%s?$select=id" % (user_path(address), quote(well_known, safe=""))


def move_url(address: str, copy_id: str) -> str:
    return "%s/messages/%s/move" % (user_path(address), quote_segment(copy_id))


def purge_url(address: str, copy_id: str) -> str:
    return "%s/messages/%s/permanentDelete" % (user_path(address), quote_segment(copy_id))


def group_lookup_url(address: str) -> str:
    return "/groups?%s&$select=id" % filter_param("mail", address)


def group_members_url(group_id: str) -> str:
    return "/groups/%s/transitiveMembers?$select=mail,userPrincipalName" % quote(group_id, safe="")


def error_of(status: int, body: Any) -> Tuple[str, str]:
    """(code, message) of a Graph error envelope; a status line when there is none (a proxy's
    5xx, a dropped body)."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            code = str(error.get("code") or "HTTP %d" % status)
            return code, str(error.get("message") or "")
    return "HTTP %d" % status, "Graph answered HTTP %d" % status


def retry_after(headers: Optional[Mapping[str, Any]], default: float) -> float:
    """Seconds to wait from a Retry-After header: seconds (Graph may send fractions) or an
    HTTP date; `default` when absent or unreadable."""
    value = None
    for key, item in (headers or {}).items():
        if str(key).lower() == "retry-after":
            value = str(item).strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def backoff(retry_number: int, base: float = 0.25, cap: float = 8.0) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): spreads retries of many
    copies that failed together instead of sending them back in one wave."""
    return random.uniform(0, min(cap, base * (2 ** max(0, retry_number - 1))))


# What an error answer means for the copy. Kinds:
#   "not_a_mailbox" / "not_authorized" / "fatal": final, with that reason (fatal: provider_error)
#   "throttled": retry after Retry-After (nothing was done)
#   "transient": retry with backoff (a move may or may not have happened: look up again)
#   "token": refresh the app token once and retry
#   "gone": the item id is no longer there (a move raced a user or an earlier move)
#   "no_folder": a well-known folder the mailbox does not have
def classify(status: int, code: str, what: str = "lookup") -> str:
    if status == 429:
        return "throttled"
    if status >= 500 or status in (408, 424):
        return "transient"
    if status == 401:  # InvalidAuthenticationToken and kin: the scheduler refreshes once
        return "token"
    if status == 403:
        return "not_authorized"
    if status == 404:
        if code in NOT_A_MAILBOX_CODES:
            return "not_a_mailbox"
        if what == "folder":
            return "no_folder"
        if code in ITEM_GONE_CODES:
            return "gone"
    return "fatal"


REASON_OF_KIND: Dict[str, str] = {
    "not_a_mailbox": Reason.NOT_A_MAILBOX.value,
    "not_authorized": Reason.NOT_AUTHORIZED.value,
    "fatal": Reason.PROVIDER_ERROR.value,
}
