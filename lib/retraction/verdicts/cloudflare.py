"""Cloudflare Email Security API client: `investigate` (cursor paging), one message, and
`submissions` (page paging), read with requests.

Transient failures (connection errors, 5xx) are retried a couple of times inside a call by
urllib3's `Retry`, with exponential backoff; what still fails, and every 401/403/429, raises
`CloudflareError` for the caller to back off across polls (a sensor must not sleep for a
`Retry-After` of minutes inside one poll). The API token lives only in the session's
`Authorization` header: it is in no message, repr or log line of this module.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from retraction.verdicts.rows import iso

LOG = logging.getLogger(__name__)

MAX_PER_PAGE = 1000  # Cloudflare's limit for investigate
DEFAULT_PER_PAGE = 1000
MAX_PAGES = 100000  # a server that never stops paging is a bug, not a workload
USER_AGENT = "stackstorm-email_retraction"


def _ceil_ms(moment: Optional[datetime]) -> Optional[datetime]:
    """Cloudflare times have millisecond precision; an inclusive `end` is rounded up so a row
    scanned in the last partial millisecond is not left out."""
    if moment is None or moment.microsecond % 1000 == 0:
        return moment
    return moment + timedelta(microseconds=1000 - moment.microsecond % 1000)


class CloudflareError(Exception):
    """The API could not be read. `status` is the HTTP status (None: no answer), `code` and
    the message are Cloudflare's own, `retry_after` is seconds from a Retry-After header."""

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[int] = None,
                 retry_after: Optional[float] = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def _retry_after(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from Cloudflare; the poll backoff covers it


def _error_of(response: requests.Response, what: str) -> CloudflareError:
    code, message = None, response.reason or "HTTP error"
    try:
        errors = response.json().get("errors") or []
        if errors and isinstance(errors[0], dict):
            code = errors[0].get("code")
            message = str(errors[0].get("message") or message)
    except (ValueError, AttributeError):
        pass
    return CloudflareError("Cloudflare %s answered HTTP %d (code %s: %s)"
                           % (what, response.status_code, code, message[:200]),
                           status=response.status_code, code=code,
                           retry_after=_retry_after(response))


class CloudflareClient:
    """One account's Email Security API. `base_url` is `.../client/v4` (config
    `cloudflare.base_url`)."""

    def __init__(self, account_id: str, api_token: str,
                 base_url: str = "https://api.cloudflare.com/client/v4",
                 session: Optional[requests.Session] = None,
                 timeout: Tuple[float, float] = (10.0, 60.0), retries: int = 2,
                 backoff_factor: float = 0.25):
        if not account_id or not api_token:
            raise ValueError("a Cloudflare account id and API token are required")
        self.base = "%s/accounts/%s/email-security/" % (base_url.rstrip("/"),
                                                        quote(account_id, safe=""))
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = "Bearer " + api_token
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        retry = Retry(total=retries, connect=retries, read=retries, status=retries,
                      backoff_factor=backoff_factor, status_forcelist=(500, 502, 503, 504),
                      allowed_methods=frozenset(["GET"]), respect_retry_after_header=False,
                      raise_on_status=False)
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "CloudflareClient":
        """From `config.CloudflareSettings`; ConfigError (naming the key) if incomplete."""
        settings.require_credentials()
        return cls(settings.account_id, settings.api_token, settings.base_url, **kwargs)

    def __repr__(self) -> str:
        return "CloudflareClient(%r)" % self.base

    def close(self) -> None:
        self.session.close()

    # -- HTTP ---------------------------------------------------------------------------------
    def _get(self, path: str, params: Dict[str, Any], what: str) -> dict:
        query = {k: (iso(v) if isinstance(v, datetime) else v)
                 for k, v in params.items() if v is not None}
        try:
            response = self.session.get(self.base + path, params=query, timeout=self.timeout)
        except requests.RequestException as exc:
            raise CloudflareError("Cloudflare %s did not answer: %s"
                                  % (what, type(exc).__name__))
        if response.status_code != 200:
            raise _error_of(response, what)
        try:
            body = response.json()
        except ValueError:
            raise CloudflareError("Cloudflare %s answered with invalid JSON" % what,
                                  status=response.status_code)
        if not isinstance(body, dict) or body.get("success") is not True:
            raise CloudflareError("Cloudflare %s answered success=false" % what,
                                  status=response.status_code)
        return body

    @staticmethod
    def _rows(body: dict, what: str) -> List[Any]:
        rows = body.get("result")
        if not isinstance(rows, list):
            raise CloudflareError("Cloudflare %s answered without a result list" % what)
        return rows

    # -- investigate --------------------------------------------------------------------------
    def investigate(self, start: Optional[datetime] = None, end: Optional[datetime] = None,
                    per_page: int = DEFAULT_PER_PAGE, **filters: Any) -> Iterator[List[Any]]:
        """Pages of raw rows scanned in [start, end] (both inclusive), following `next` until
        it is null. The rows of a page are raw dicts: `rows.verdict_row` checks them.
        Filters: final_disposition, message_id, recipient, sender, subject, query, ..."""
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError("per_page must be between 1 and %d" % MAX_PER_PAGE)
        params = dict(filters, start=start, end=_ceil_ms(end), per_page=per_page)
        seen_cursors = set()
        for _ in range(MAX_PAGES):
            body = self._get("investigate", params, "investigate")
            yield self._rows(body, "investigate")
            info = body.get("result_info") or {}
            cursor = info.get("next") if isinstance(info, dict) else None
            if not cursor:
                return
            if cursor in seen_cursors:
                raise CloudflareError("Cloudflare investigate repeated a cursor")
            seen_cursors.add(cursor)
            params["cursor"] = cursor
        raise CloudflareError("Cloudflare investigate paged past %d pages" % MAX_PAGES)

    def message(self, investigate_id: str) -> Optional[dict]:
        """One row by its id or postfix id; None if Cloudflare does not know it."""
        try:
            body = self._get("investigate/" + quote(investigate_id, safe=""), {},
                             "investigate/{id}")
        except CloudflareError as exc:
            if exc.status == 404:
                return None
            raise
        row = body.get("result")
        if not isinstance(row, dict):
            raise CloudflareError("Cloudflare investigate/{id} answered without a row")
        return row

    # -- submissions --------------------------------------------------------------------------
    def submissions(self, start: Optional[datetime] = None, end: Optional[datetime] = None,
                    per_page: int = DEFAULT_PER_PAGE, **filters: Any) -> Iterator[List[Any]]:
        """Pages of raw submission rows requested in [start, end] (page paging)."""
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError("per_page must be between 1 and %d" % MAX_PER_PAGE)
        params = dict(filters, start=start, end=_ceil_ms(end), per_page=per_page)
        for page in range(1, MAX_PAGES + 1):
            params["page"] = page
            body = self._get("submissions", params, "submissions")
            rows = self._rows(body, "submissions")
            yield rows
            info = body.get("result_info") or {}
            total = info.get("total_count") if isinstance(info, dict) else None
            if len(rows) < per_page or (isinstance(total, int) and page * per_page >= total):
                return
        raise CloudflareError("Cloudflare submissions paged past %d pages" % MAX_PAGES)
