"""Microsoft 365 through Microsoft Graph: find copies by Internet Message-ID and move them.

Wiring only: `graph_auth` (msal token + the pooled session), `graph_batch` (the run: batching,
per-mailbox limits, retries, classification), `graph_wire` (URLs, error envelope). Group
expansion lives here because it is plain paged GETs.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import requests

from retraction.model import Outcome, Reason, RetractionRequest
from retraction.providers.base import MailProvider, Target
from retraction.providers.graph_auth import TokenSource, make_session
from retraction.providers.graph_batch import NO_ANSWER, Answer, GraphRun, Item
from retraction.providers.graph_wire import (
    PREFER_IMMUTABLE, backoff, classify, error_of, group_lookup_url, group_members_url,
    retry_after)

log = logging.getLogger(__name__)

TIMEOUT = (10, 30)  # connect, read (s): a $batch of 20 items answers well within this
USER_TYPE = "#microsoft.graph.user"
# Each $batch item's headers; shared by all items (the JSON is the same as with one dict each).
_ITEM_HEADERS = {"Prefer": PREFER_IMMUTABLE}
_ITEM_BODY_HEADERS = {"Prefer": PREFER_IMMUTABLE, "Content-Type": "application/json"}


class GraphError(Exception):
    """A Graph answer that retries did not turn into a success."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__("%s (HTTP %d): %s" % (code, status, message))
        self.status, self.code, self.message = status, code, message


class GraphProvider(MailProvider):
    name = "microsoft"

    def __init__(self, settings: Any, limits: Any):
        if hasattr(settings, "require_credentials"):
            settings.require_credentials()  # a config problem names its key before any call
        self.settings = settings
        self.limits = limits
        self.graph_url = settings.graph_url.rstrip("/")
        self.concurrency = max(1, int(limits.provider_concurrency))
        # +2: the token fetch and a group expansion may run beside a full set of batches.
        self.session = make_session(settings.ca_file, self.concurrency + 2)
        self.tokens = TokenSource(settings, self.session, float(limits.retry_budget_s),
                                  int(limits.max_attempts))
        self._lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._folders: Dict[str, Dict[str, Optional[str]]] = {}
        self._refused: Dict[str, Tuple[str, str, str]] = {}

    # -- retract ------------------------------------------------------------------------------
    def retract(self, request: RetractionRequest, targets: Iterable[Target]) -> Iterator[Outcome]:
        # The token first: rejected credentials raise ProviderUnavailable before any outcome.
        self.tokens.get()
        run = GraphRun(request, self._send, self._pool(), self.concurrency, self._folders,
                       self.tokens.invalidate, float(self.limits.retry_budget_s),
                       int(self.limits.max_attempts), self._refused)
        for outcome in run.run(targets):
            yield outcome

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="graph")
            return self._executor

    def _send(self, items: List[Item]) -> Tuple[Optional[str], List[Answer]]:
        """POST one $batch; one answer per item, in order. Runs on a worker thread."""
        token = self.tokens.get()
        requests_ = []
        for index, item in enumerate(items):
            if item.body is None:
                requests_.append({"id": str(index), "method": item.method, "url": item.url,
                                  "headers": _ITEM_HEADERS})
            else:
                requests_.append({"id": str(index), "method": item.method, "url": item.url,
                                  "headers": _ITEM_BODY_HEADERS, "body": item.body})
        try:
            response = self.session.post(
                self.graph_url + "/$batch", json={"requests": requests_}, timeout=TIMEOUT,
                headers=self._headers(token))
            body = response.json() if response.content else None
        except (requests.RequestException, ValueError) as exc:
            lost: Answer = (0, {NO_ANSWER: type(exc).__name__}, "no answer from Graph: %s" % exc)
            return token, [lost] * len(items)
        if response.status_code != 200 or not isinstance(body, dict):
            whole: Answer = (response.status_code, dict(response.headers), body)
            return token, [whole] * len(items)
        answers = {str(r.get("id")): r for r in body.get("responses") or []
                   if isinstance(r, dict)}
        out: List[Answer] = []
        for index in range(len(items)):
            answer = answers.get(str(index))
            if answer is None:
                out.append((0, {NO_ANSWER: "MissingBatchResponse"},
                            "the $batch response has no answer for this item"))
            else:
                out.append((int(answer.get("status") or 0), answer.get("headers") or {},
                            answer.get("body")))
        return token, out

    @staticmethod
    def _headers(token: str) -> Dict[str, str]:
        return {"Authorization": "Bearer " + token, "Prefer": PREFER_IMMUTABLE}

    # -- groups -------------------------------------------------------------------------------
    def expand_group(self, address: str) -> Optional[List[str]]:
        """Member mailboxes (users, transitively) of the group with this mail address; None
        when no group has it. When Graph refuses (403: GroupMember.Read.All not granted) or
        keeps failing, the refusal is remembered and logged: the group address's own outcome
        then carries not_authorized / provider_error with Graph's code instead of a silent
        not_a_mailbox, so the missed member copies are visible in the ledger."""
        try:
            found = self._get(group_lookup_url(address)).get("value") or []
            if not found:
                return None
            members: Dict[str, str] = {}
            url: Optional[str] = group_members_url(str(found[0]["id"]))
            while url:
                page = self._get(url)
                for member in page.get("value") or []:
                    kind = member.get("@odata.type")
                    mail = member.get("mail") or member.get("userPrincipalName")
                    # Without a type, only users carry a userPrincipalName (groups do not).
                    is_user = kind == USER_TYPE or (kind is None and member.get(
                        "userPrincipalName"))
                    if is_user and mail:
                        members.setdefault(mail.lower(), mail)
                url = self._next_link(page.get("@odata.nextLink"))
            self._refused.pop(address.lower(), None)
            return list(members.values())
        except GraphError as err:
            kind = classify(err.status, err.code) if err.status else "transient"
            reason = (Reason.NOT_AUTHORIZED.value if kind in ("not_authorized", "token")
                      else Reason.PROVIDER_ERROR.value)
            message = "could not expand group %s: %s" % (address, err.message)
            log.warning("%s (%s)", message, err.code)
            self._refused[address.lower()] = (reason, err.code, message[:1000])
            return None

    def _next_link(self, link: Optional[str]) -> Optional[str]:
        if not link:
            return None
        if not link.startswith(self.graph_url + "/"):
            # Never send the token to a host the configuration did not name.
            raise GraphError(0, "UnexpectedNextLink", "paging link outside graph_url")
        return link[len(self.graph_url):]

    def _get(self, url: str) -> Dict[str, Any]:
        """GET relative to graph_url with the run's retry rules (Retry-After, backoff, one
        token refresh)."""
        deadline = time.monotonic() + float(self.limits.retry_budget_s)
        refreshed = False
        for attempt in range(1, int(self.limits.max_attempts) + 1):
            token = self.tokens.get()
            try:
                response = self.session.get(self.graph_url + url, headers=self._headers(token),
                                            timeout=TIMEOUT)
                body = response.json() if response.content else None
            except (requests.RequestException, ValueError) as exc:
                status, code, message = 0, type(exc).__name__, str(exc)
                delay = backoff(attempt)
            else:
                if response.status_code == 200 and isinstance(body, dict):
                    return body
                status = response.status_code
                code, message = error_of(status, body)
                kind = classify(status, code)
                if kind == "token" and not refreshed:
                    refreshed = True
                    self.tokens.invalidate(token)
                    continue
                if kind not in ("throttled", "transient"):
                    raise GraphError(status, code, message)
                delay = retry_after(response.headers, default=backoff(attempt))
            if attempt == int(self.limits.max_attempts) or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
        raise GraphError(status, code, "%s (gave up after %d attempts)" % (message, attempt))

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        self.session.close()
