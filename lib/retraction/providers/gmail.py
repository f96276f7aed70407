"""Gmail provider: retract copies through the Gmail API with domain-wide delegation.

Pieces: `gmail_auth` (tokens per subject), `gmail_batch` (multipart batches over httplib2),
`gmail_run` (the per-copy pipeline of one run). This module wires them, builds the discovery
resources once (static discovery documents bundled with google-api-python-client, no network)
and expands Google groups through the Admin SDK Directory API.

Concurrency: `limits.provider_concurrency` batches in flight, each up to `google.batch_size`
parts (<= 100) mixing mailboxes; tokens on a separate pool (one token request per mailbox
cannot be batched, so it gets more threads). Every batch thread has its own keep-alive
httplib2 connection; the token threads share one urllib3 pool. SDKs are imported on first use,
not at import time.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from retraction.config import ConfigError
from retraction.model import Destination, Outcome, Reason, RetractionRequest
from retraction.providers.base import MailProvider, ProviderUnavailable, Target
from retraction.providers.gmail_auth import (
    SCOPE_GROUP_MEMBERS, TokenBroker, TokenFailure, backoff_delay, scopes_for)
from retraction.providers.gmail_batch import (
    PartError, ThreadLocalHttp, execute, http_error, transport_error)
from retraction.providers.gmail_copy import RequestCache
from retraction.providers.gmail_run import Run

LOG = logging.getLogger(__name__)

MAX_BATCH = 100  # Google's limit of calls per batch
# Token requests are one per mailbox and cannot be batched. A token costs ~2.6 ms of client
# CPU (the RS256 signature is half of it), so one core signs ~385 a second; 32 in flight at
# 50 ms RTT allow ~640 a second. Measured: 128 threads bought no wall time and cost CPU
# (context switches, GIL hand-offs).
TOKEN_WORKERS_PER_SLOT = 8
MAX_TOKEN_WORKERS = 32
# Gmail search has operators: whitespace, quotes, parentheses and braces would widen
# `rfc822msgid:<id>` into another query. validation.py already refuses them; refuse again.
_SEARCHABLE_ID_RE = re.compile(r'<[^\x00-\x20\x7f"()<>@\\{},;]+@[^\x00-\x20\x7f"()<>@\\{},;]+>')


def searchable_message_id(message_id: str) -> str:
    text = message_id if isinstance(message_id, str) else ""
    if len(text) > 998 or not text.isascii() or not _SEARCHABLE_ID_RE.fullmatch(text):
        raise ValueError("message_id: %r is not a msg-id Gmail search can take literally"
                         % (message_id or "")[:80])
    return message_id


class GmailProvider(MailProvider):
    name = "google"

    def __init__(self, settings: Any, limits: Any):
        self.settings = settings
        self.limits = limits
        self._info = settings.service_account_info()  # ConfigError naming the key
        size = int(getattr(settings, "batch_size", 50) or 50)
        if not 1 <= size <= MAX_BATCH:
            raise ConfigError("google.batch_size", "must be between 1 and %d" % MAX_BATCH)
        self.batch_size = size
        self.concurrency = max(1, int(limits.provider_concurrency))
        self._http = ThreadLocalHttp(getattr(settings, "ca_file", "") or "")
        self._lock = threading.Lock()
        self._tokens: Optional[TokenBroker] = None
        self._batch_pool: Optional[ThreadPoolExecutor] = None
        self._messages: Any = None
        self._requests: Optional[RequestCache] = None
        self._directory: Any = None

    # -- lazily built pieces (nothing heavy until a Google copy is retracted) ---------------------
    @property
    def tokens(self) -> TokenBroker:
        with self._lock:
            if self._tokens is None:
                workers = min(MAX_TOKEN_WORKERS, TOKEN_WORKERS_PER_SLOT * self.concurrency)
                self._tokens = TokenBroker(
                    self._info, self.settings.token_uri, self._http.get, workers,
                    self.limits.retry_budget_s, self.limits.max_attempts)
            return self._tokens

    @property
    def batch_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._batch_pool is None:
                self._batch_pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                                      thread_name_prefix="gmail-batch")
            return self._batch_pool

    def _service(self, name: str, version: str, endpoint: str) -> Any:
        """A discovery resource built once, without credentials: each request gets its
        subject's credentials attached when it is sent."""
        import httplib2
        from googleapiclient.discovery import build

        return build(name, version, http=httplib2.Http(), static_discovery=True,
                     cache_discovery=False, client_options={"api_endpoint": endpoint})

    @property
    def messages(self) -> Any:
        with self._lock:
            if self._messages is None:
                gmail = self._service("gmail", "v1", self.settings.gmail_url)
                self._messages = gmail.users().messages()
                self._requests = RequestCache(self._messages)
            return self._messages

    # -- MailProvider ---------------------------------------------------------------------------
    def retract(self, request: RetractionRequest, targets: Iterable[Target]) -> Iterator[Outcome]:
        searchable_message_id(request.message_id)
        scopes = scopes_for(Destination(request.destination))
        self.messages  # noqa: B018 (built now: a broken install fails here, not mid-run)
        return Run(self, request, scopes).outcomes(targets)

    def send_batch(self, calls: List[Any], query: str
                   ) -> Tuple[Optional[dict], Optional[PartError], bool]:
        """Runs in a batch pool thread: (per-part results, None, False), or (None, error,
        refused) when the whole batch failed; `refused` when a token refresh was refused."""
        from google.auth.exceptions import GoogleAuthError

        self.messages  # noqa: B018 (built with its request cache)
        build = self._requests.build
        parts = [(build(call, query), call.task.creds) for call in calls]
        try:
            return execute(self.settings.batch_uri, self._http.get(), parts), None, False
        except GoogleAuthError as exc:  # the library's own refresh after a part's 401
            message = "token refresh after 401 failed: %s" % type(exc).__name__
            return None, PartError(401, "authError", message), True
        except KeyError:
            return None, PartError(0, "batch_error", "a part is missing from the answer"), False
        except Exception as exc:  # HttpError of the batch, transport and multipart errors
            LOG.info("gmail batch failed: %s", type(exc).__name__)
            return None, transport_error(exc), False

    # -- groups ---------------------------------------------------------------------------------
    def expand_group(self, address: str) -> Optional[List[str]]:
        """Members' addresses of a Google group (nested groups flattened), or None if `address`
        is not a group. Directory `members.list`, impersonating `google.directory_admin`."""
        admin = self.settings.directory_admin
        if not admin:
            raise ConfigError("google.directory_admin", "is required to expand Google groups")
        try:
            creds = self.tokens.get(admin, (SCOPE_GROUP_MEMBERS,)).result()
        except TokenFailure as failure:
            reason = Reason.PROVIDER_ERROR if failure.kind == Reason.PROVIDER_ERROR.value \
                else Reason.NOT_AUTHORIZED
            raise ProviderUnavailable(
                reason.value, failure.code,
                "no Directory token for %s: %s" % (admin, failure.message)) from None
        # includeDerivedMembership: Google flattens nested groups (each member once); the
        # nested groups' own entries (type GROUP) and CUSTOMER (whole domain) are skipped.
        members, seen, page = [], set(), None
        while True:
            answer = self._members_page(creds, address, page)
            if answer is None:
                return None
            for member in answer.get("members") or []:
                email = str(member.get("email") or "")
                if member.get("type", "USER") == "USER" and email and email.lower() not in seen:
                    seen.add(email.lower())
                    members.append(email)
            page = answer.get("nextPageToken")
            if not page:
                return members

    def _members_page(self, creds: Any, group: str, page: Optional[str]) -> Optional[dict]:
        import google_auth_httplib2
        from google.auth.exceptions import RefreshError
        from googleapiclient.errors import HttpError

        with self._lock:
            if self._directory is None:
                self._directory = self._service("admin", "directory_v1",
                                                self.settings.directory_url).members()
        deadline, tries = time.monotonic() + self.limits.retry_budget_s, 0
        while True:
            tries += 1
            request = self._directory.list(groupKey=group, maxResults=200, pageToken=page,
                                           includeDerivedMembership=True)
            try:
                return request.execute(
                    http=google_auth_httplib2.AuthorizedHttp(creds, http=self._http.get()))
            except HttpError as exc:
                error = http_error(exc)
                if error.status == 404:
                    return None  # not a group
            except RefreshError as exc:
                raise ProviderUnavailable(Reason.NOT_AUTHORIZED.value, "authError",
                                          "Directory token refused: %s" % exc.args[0]) from None
            except Exception as exc:  # transport errors
                error = transport_error(exc)
            delay = backoff_delay(tries, error.retry_after)
            if (not error.retryable or tries >= self.limits.max_attempts
                    or time.monotonic() + delay > deadline):
                reason = Reason.NOT_AUTHORIZED if error.status in (401, 403) \
                    else Reason.PROVIDER_ERROR
                raise ProviderUnavailable(reason.value, error.code,
                                          "Directory members of %s: %s" % (group, error.message))
            time.sleep(delay)

    def close(self) -> None:
        with self._lock:
            pools = [self._batch_pool, self._tokens]
            self._batch_pool = self._tokens = None
        if pools[0] is not None:
            pools[0].shutdown(wait=False)
        if pools[1] is not None:
            pools[1].close()
        self._http.close()
