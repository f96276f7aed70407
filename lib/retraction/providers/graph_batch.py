"""One retraction run over Graph: copies as small state machines, packed into `$batch`es.

Each copy (a `_Job`) goes lookup -> (classify) -> act. A stage is 1-4 sub-requests for the
copy's mailbox that travel together in one `$batch` of up to 20; the coordinator (the
generator in `GraphRun.run`) packs ready stages into batches, keeps `concurrency` batches in
flight on a thread pool, never has more than 4 sub-requests in flight per mailbox (Exchange
Online's limit, so the provider does not provoke its own 429s), re-queues throttled items after
their own Retry-After, and yields each copy's outcome as soon as it is final.

Per copy, the usual pattern is two rounds and three batch items: lookup (the message list
filtered on internetMessageId + the inbox folder id) and the move. A copy outside the inbox
adds one round resolving the other well-known folder ids; an empty list under soft or hard
delete adds one round looking in Recoverable Items; a restore looks there at once.
"""
from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from retraction.model import Destination, Outcome, Reason, RetractionRequest, Status, utc_now
from retraction.providers.base import Target
from retraction.providers.graph_wire import (
    BATCH_LIMIT, CANONICAL_OF, DESTINATION_FOLDER, MAILBOX_CONCURRENCY, REASON_OF_KIND,
    RESTORABLE, backoff, classify, error_of, folder_url, lookup_url, move_url, purge_url,
    retry_after)


# Well-known folders resolved together with the lookup. The inbox alone: most copies are
# there, and a copy in the inbox is not in any destination but inbox, so it is classified and
# moved without a second lookup round. A copy anywhere else needs the full set (CLASSIFY_FOLDERS)
# in one extra round. Restore mostly finds copies in junk, so it asks for junk too.
LOOKUP_FOLDERS = {
    "junk": ("inbox",),
    "trash": ("inbox",),
    "soft_delete": ("inbox",),
    "hard_delete": ("inbox",),
    "inbox": ("inbox", "junkemail"),
}
# Resolved only when a copy sits in a folder none of the above matched.
CLASSIFY_FOLDERS = ("inbox", "junkemail", "deleteditems", "archive", "recoverableitemsdeletions")
# Copies in Recoverable Items are not in the plain message list. A restore wants them at once
# (it mostly brings them back from there); soft and hard delete look there only when the plain
# list is empty (a rerun: already soft-deleted; a copy the user deleted that hard delete must
# still purge). Junk and trash leave them alone: the user deleted them already.
SEES_RECOVERABLE = ("inbox",)
SEES_RECOVERABLE_WHEN_EMPTY = ("soft_delete", "hard_delete")

# Enum values read once: an Enum's .value is a Python-level property, read several times a copy.
_INBOX, _HARD_DELETE = Destination.INBOX.value, Destination.HARD_DELETE.value
_RETRACTED, _FAILED = Status.RETRACTED.value, Status.FAILED.value
_ALREADY, _PREVIEWED = Status.ALREADY_IN_DESTINATION.value, Status.PREVIEWED.value
_PROVIDER_ERROR, _NOT_FOUND = Reason.PROVIDER_ERROR.value, Reason.NOT_FOUND.value
_NOT_A_MAILBOX = Reason.NOT_A_MAILBOX.value

# (status, headers, body) of one sub-request. Status 0: no HTTP answer (drop, timeout); then
# headers[NO_ANSWER] is the exception's class name and body its text.
NO_ANSWER = "x-no-answer"
Answer = Tuple[int, Dict[str, Any], Any]
# Sends a batch: items -> (token used, one answer per item, in order).
Sender = Callable[[List["Item"]], Tuple[Optional[str], List[Answer]]]


class Item:
    __slots__ = ("job", "key", "kind", "method", "url", "body")

    def __init__(self, job: "_Job", key: str, kind: str, method: str, url: str,
                 body: Optional[dict] = None):
        self.job, self.key, self.kind = job, key, kind  # kind: lookup | folder | act
        self.method, self.url, self.body = method, url, body


class _Job:
    """One copy (target) through its stages."""

    def __init__(self, target: Target):
        self.target = target
        self.mailbox = target.recipient.lower()
        self.stage = "lookup"
        self.pending: Dict[str, Item] = {}
        self.results: Dict[str, Any] = {}
        self.retries = 0  # retry rounds: the outcome's attempts are retries + 1
        self.tries: Counter = Counter()  # request key -> failed sends (the retry budget)
        self.started: Optional[float] = None
        self.token_retried = False
        self.act_sent = False  # a move/purge went out: it may have landed even without an answer
        self.first_seen: Optional[Tuple[bool, str]] = None  # (was_read, source) before acting
        self.more = False  # more copies to act on than one round may carry
        self.gone: Optional[Tuple[str, str]] = None  # Graph's answer when a move lost its copy

    def put(self, items: Iterable[Item], keep: bool = False) -> None:
        """The next stage's items; `keep` the answers so far (classify adds to the lookup)."""
        self.pending = {item.key: item for item in items}
        if not keep:
            self.results = {}


class GraphRun:
    def __init__(self, request: RetractionRequest, send: Sender, executor: Executor,
                 concurrency: int, folders: Dict[str, Dict[str, Optional[str]]],
                 invalidate: Callable[[Optional[str]], None], budget_s: float,
                 max_attempts: int, refused: Dict[str, Tuple[str, str, str]]):
        self.request = request
        self.destination = Destination(request.destination).value
        self.send = send
        self.executor = executor
        self.concurrency = max(1, concurrency)
        self.window = self.concurrency * BATCH_LIMIT
        self.folders = folders  # mailbox -> well-known name -> id (None: no such folder)
        self.invalidate = invalidate
        self.budget_s = budget_s
        self.max_attempts = max(1, max_attempts)
        self.refused = refused  # group address -> (reason, code, message) from expand_group
        self._seq = itertools.count()
        self.finished: Deque[Outcome] = deque()
        self.ready_next: Deque[_Job] = deque()  # jobs past lookup: finish them first
        self.ready_new: Deque[_Job] = deque()
        self.delayed: List[Tuple[float, int, _Job]] = []
        self.mailbox_load: Counter = Counter()
        r = request
        # What every outcome of this run shares, converted once (str() of an Enum is not free).
        self._run_fields: Dict[str, Any] = dict(
            run_id=r.run_id, message_id=r.message_id, provider="microsoft",
            destination=self.destination, mode=str(r.mode), trigger=str(r.trigger),
            disposition=str(r.disposition) if r.disposition is not None else None,
            verdict_time=r.verdict_time, requested_at=r.requested_at,
            requested_by=r.requested_by, comment=r.comment)

    # -- the coordinator ----------------------------------------------------------------------
    def run(self, targets: Iterable[Target]) -> Iterator[Outcome]:
        source = iter(targets)
        exhausted, active = False, 0
        in_flight: Dict[Future, List[Item]] = {}
        while True:
            while not exhausted and active < self.window:
                target = next(source, None)
                if target is None:
                    exhausted = True
                    break
                job = _Job(target)
                active += 1
                self._start_lookup(job)
                self.ready_new.append(job)
            now = time.monotonic()
            while self.delayed and self.delayed[0][0] <= now:
                self._ready(heapq.heappop(self.delayed)[2])
            while len(in_flight) < self.concurrency:
                # A batch holds a connection for a round trip whatever its size: while half
                # the slots are busy, wait for a full one (answers bring more items soon).
                partial = len(in_flight) < max(1, self.concurrency // 2)
                items = self._take_batch(1 if partial else BATCH_LIMIT)
                if not items:
                    break
                for item in items:
                    self.mailbox_load[item.job.mailbox] += 1
                in_flight[self.executor.submit(self.send, items)] = items
            while self.finished:
                active -= 1
                yield self.finished.popleft()
            if exhausted and active == 0:
                return
            timeout = max(0.0, self.delayed[0][0] - now) if self.delayed else None
            if not in_flight:
                if timeout is None:  # cannot happen: every active job is ready or delayed
                    raise RuntimeError("graph run stalled with %d copies pending" % active)
                time.sleep(timeout)
                continue
            done, _ = wait(list(in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                items = in_flight.pop(future)
                for item in items:
                    self.mailbox_load[item.job.mailbox] -= 1
                    if not self.mailbox_load[item.job.mailbox]:
                        del self.mailbox_load[item.job.mailbox]
                token, answers = future.result()  # ProviderUnavailable propagates to the caller
                self._on_batch(items, token, answers)

    def _ready(self, job: _Job) -> None:
        (self.ready_new if job.started is None else self.ready_next).append(job)

    def _take_batch(self, least: int) -> List[Item]:
        """Up to 20 items: whole stages of ready jobs whose mailbox has room; nothing (and the
        queues untouched) when fewer than `least` items are ready."""
        items: List[Item] = []
        taken: List[Tuple[Deque[_Job], _Job]] = []
        in_batch: Dict[str, int] = {}  # mailbox -> items of it in this batch so far
        for queue in (self.ready_next, self.ready_new):
            skipped: List[_Job] = []
            while queue and len(items) < BATCH_LIMIT:
                job = queue.popleft()
                stage = list(job.pending.values())
                # .get: a Counter's missing key costs a Python-level __missing__ call
                load = self.mailbox_load.get(job.mailbox, 0) + in_batch.get(job.mailbox, 0)
                if len(items) + len(stage) > BATCH_LIMIT:
                    skipped.append(job)
                    break
                if load and load + len(stage) > MAILBOX_CONCURRENCY:
                    skipped.append(job)  # this mailbox is busy: wait for its answers
                    continue
                taken.append((queue, job))
                items.extend(stage)
                in_batch[job.mailbox] = in_batch.get(job.mailbox, 0) + len(stage)
            queue.extendleft(reversed(skipped))
        if len(items) < least:
            for queue, job in reversed(taken):
                queue.appendleft(job)
            return []
        now = time.monotonic()
        for _, job in taken:
            if job.started is None:
                job.started = now
        return items

    # -- answers ------------------------------------------------------------------------------
    def _on_batch(self, items: List[Item], token: Optional[str], answers: List[Answer]) -> None:
        by_job: Dict[int, List[Tuple[Item, Answer]]] = {}
        jobs: Dict[int, _Job] = {}
        for item, answer in zip(items, answers):
            by_job.setdefault(id(item.job), []).append((item, answer))
            jobs[id(item.job)] = item.job
        for key, pairs in by_job.items():
            self._on_job_answers(jobs[key], pairs, token)

    def _on_job_answers(self, job: _Job, pairs: List[Tuple[Item, Answer]],
                        token: Optional[str]) -> None:
        delay, relookup, refresh = 0.0, False, False
        last = ("", "")
        failed: List[str] = []  # keys of the requests that failed this round
        for item, (status, headers, body) in pairs:
            if 200 <= status < 300:
                job.results[item.key] = body
                job.pending.pop(item.key, None)
                continue
            job.tries[item.key] += 1
            failed.append(item.key)
            tries = job.tries[item.key]
            code, message = error_of(status, body) if status else (
                str(headers.get(NO_ANSWER, "ConnectionError")), str(body))
            last = (code, message)
            kind = classify(status, code, item.kind) if status else "transient"
            if kind == "token":
                if not job.token_retried:
                    refresh = True
                    continue
                kind = "not_authorized"
            if kind in ("no_folder", "gone") and item.kind != "act":
                if item.kind == "folder" or item.key == "recov":
                    job.results[item.key] = None  # no such folder: nothing in it
                    job.pending.pop(item.key, None)
                    continue
                kind = "fatal"
            if kind == "gone":
                job.gone = (code, message)
            if kind == "gone" or (kind == "transient" and item.kind == "act"):
                relookup = True  # the copy moved under us, or our move may have landed
                delay = max(delay, backoff(tries) if kind == "transient" else 0.0)
            elif kind == "throttled":
                delay = max(delay, retry_after(headers, default=1.0))
            elif kind == "transient":
                delay = max(delay, retry_after(headers, default=backoff(tries)))
            else:
                return self._fail(job, REASON_OF_KIND.get(kind, _PROVIDER_ERROR),
                                  code, message)
        if refresh:
            job.token_retried = True
            self.invalidate(token)
        if job.pending or relookup:
            self._retry(job, delay, relookup, last, max((job.tries[k] for k in failed),
                                                        default=0))
        else:
            self._advance(job)

    def _retry(self, job: _Job, delay: float, relookup: bool, last: Tuple[str, str],
               tries: int) -> None:
        """Send the failed requests again after `delay`. `tries`: the most sends any of them
        has had. Each request has its own `max_attempts` (as in the Gmail provider): a copy
        takes several requests, so one count per copy would give up under a fault rate that
        every single request survives."""
        started = job.started if job.started is not None else time.monotonic()
        if tries >= self.max_attempts or time.monotonic() + delay > started + self.budget_s:
            code, message = last
            message = "%s (gave up after %d attempts)" % (message or "no answer",
                                                          max(tries, 1))
            return self._fail(job, _PROVIDER_ERROR, code or "RetryBudgetExhausted",
                              message)
        job.retries += 1
        if relookup:
            self._start_lookup(job)
        heapq.heappush(self.delayed, (time.monotonic() + delay, next(self._seq), job))

    # -- stages -------------------------------------------------------------------------------
    def _start_lookup(self, job: _Job) -> None:
        address, mid = job.target.recipient, self.request.message_id
        items = [Item(job, "list", "lookup", "GET", lookup_url(address, mid))]
        if self.destination in SEES_RECOVERABLE:
            items.append(self._recoverable_item(job))
        known = self.folders.get(job.mailbox, {})
        items.extend(Item(job, "folder:" + name, "folder", "GET", folder_url(address, name))
                     for name in LOOKUP_FOLDERS[self.destination] if name not in known)
        job.stage = "lookup"
        job.put(items)

    def _recoverable_item(self, job: _Job) -> Item:
        return Item(job, "recov", "lookup", "GET", lookup_url(
            job.target.recipient, self.request.message_id, "recoverableitemsdeletions"))

    def _advance(self, job: _Job) -> None:
        if job.stage == "act":
            if not job.more:
                return self._finish(job, _RETRACTED, *job.first_seen)
            self._start_lookup(job)  # more copies than one round acted on: look again
            return self._ready(job)
        known = self.folders.setdefault(job.mailbox, {})
        for key, body in job.results.items():
            if key.startswith("folder:"):
                known[key[7:]] = body.get("id") if isinstance(body, dict) else None
        copies = self._copies(job)
        if (not copies and self.destination in SEES_RECOVERABLE_WHEN_EMPTY
                and "recov" not in job.results):
            job.stage = "recoverable"
            job.put([self._recoverable_item(job)], keep=True)
            return self._ready(job)
        unknown = [name for name in CLASSIFY_FOLDERS if name not in known]
        if unknown and any(folder is None for _, _, folder in copies):
            job.stage = "classify"
            job.put((Item(job, "folder:" + name, "folder", "GET",
                          folder_url(job.target.recipient, name)) for name in unknown),
                    keep=True)
            return self._ready(job)
        self._decide(job, [(cid, read, folder or "other") for cid, read, folder in copies])

    def _copies(self, job: _Job) -> List[Tuple[str, bool, Optional[str]]]:
        """(id, isRead, canonical folder or None when unresolved) of every exact match."""
        ids = {fid: CANONICAL_OF[name]
               for name, fid in self.folders.get(job.mailbox, {}).items() if fid}
        found: Dict[str, Tuple[str, bool, Optional[str]]] = {}
        for key in ("list", "recov"):
            body = job.results.get(key)
            for message in (body.get("value") or []) if isinstance(body, dict) else []:
                # The filter may match loosely (case, normalisation): act only on exact ids.
                if message.get("internetMessageId") != self.request.message_id:
                    continue
                folder = "soft_delete" if key == "recov" else ids.get(
                    message.get("parentFolderId"))
                found[message["id"]] = (message["id"], bool(message.get("isRead")), folder)
        return list(found.values())

    def _decide(self, job: _Job, copies: List[Tuple[str, bool, str]]) -> None:
        dest = self.destination
        if dest == _INBOX:
            to_act = [c for c in copies if c[2] in RESTORABLE]
        elif dest == _HARD_DELETE:
            to_act = list(copies)
        else:
            to_act = [c for c in copies if c[2] != dest]
        if not copies:
            if job.act_sent and dest == _HARD_DELETE:
                return self._finish(job, _RETRACTED, *job.first_seen)
            # Graph answers an empty list, not an error: there is no provider code unless a
            # move was told its copy had gone (a user or a rule moved it meanwhile).
            code, message = job.gone or (None, "")
            message = "no copy of %s in this mailbox%s%s" % (
                self.request.message_id,
                " (Recoverable Items included); hard-deleted copies cannot be restored"
                if dest == _INBOX else "",
                " (%s)" % message if message else "")
            return self._fail(job, _NOT_FOUND, code, message)
        if not to_act:
            if job.act_sent:  # our earlier move landed though its answer was lost
                return self._finish(job, _RETRACTED, *job.first_seen)
            return self._finish(job, _ALREADY, None, copies[0][2])
        to_act.sort(key=lambda c: c[2] != "inbox")
        seen = (any(c[1] for c in to_act), to_act[0][2])
        if self.request.preview:
            return self._finish(job, _PREVIEWED, *seen)
        if job.first_seen is None:
            job.first_seen = seen
        job.more = len(to_act) > MAILBOX_CONCURRENCY  # act on the rest after a new lookup
        to_act = to_act[:MAILBOX_CONCURRENCY]
        address = job.target.recipient
        if dest == _HARD_DELETE:
            items = [Item(job, "act:" + c[0], "act", "POST", purge_url(address, c[0]))
                     for c in to_act]
        else:
            body = {"destinationId": DESTINATION_FOLDER[dest]}
            items = [Item(job, "act:" + c[0], "act", "POST", move_url(address, c[0]), body)
                     for c in to_act]
        job.stage, job.act_sent = "act", True
        job.put(items)
        self._ready(job)

    # -- outcomes -----------------------------------------------------------------------------
    def _finish(self, job: _Job, status: str, was_read: Optional[bool],
                source_folder: Optional[str]) -> None:
        self.finished.append(self._outcome(job, status, was_read=was_read,
                                           source_folder=source_folder))

    def _fail(self, job: _Job, reason: str, code: Optional[str], message: str) -> None:
        refusal = self.refused.get(job.mailbox)
        if reason == _NOT_A_MAILBOX and refusal:
            reason, code, message = refusal  # a group we were not allowed to expand
        self.finished.append(self._outcome(job, _FAILED, reason=reason,
                                           error_code=code, error_message=message[:1000]))

    def _outcome(self, job: _Job, status: str, **fields: Any) -> Outcome:
        return Outcome(recipient=job.target.recipient, status=status,
                       via_group=job.target.via_group, completed_at=utc_now(),
                       attempts=job.retries + 1, **self._run_fields, **fields)
